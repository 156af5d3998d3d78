"""Write slurmserve/data/sharegpt_sample.json: 50 synthetic conversations in ShareGPT format.

Deterministic (fixed seed, no network): `python benchmarks/make_sharegpt_sample.py` rewrites
the same bytes. The text is made up from templates; it only has to look like chat traffic
(short questions, longer answers, 2-4 turns) for `vllm bench serve --dataset-name sharegpt`,
`sglang.bench_serving` and TRT-LLM's benchmark_serving, which read the first two turns.
First turns stay under ~60 words so that they fit a 512-token test model.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "slurmserve" / "data" / "sharegpt_sample.json"
SEED = 20240611
COUNT = 50

TOPICS = [
    ("sourdough bread", "baking"), ("a Python list comprehension", "programming"),
    ("the French Revolution", "history"), ("a marathon training plan", "fitness"),
    ("compound interest", "finance"), ("photosynthesis", "biology"),
    ("a SQL join", "databases"), ("the Pythagorean theorem", "mathematics"),
    ("a cover letter", "careers"), ("container gardening", "gardening"),
    ("Kubernetes pods", "infrastructure"), ("the water cycle", "geography"),
    ("a haiku about autumn", "poetry"), ("jet lag", "travel"),
    ("a REST API", "web development"), ("black holes", "astronomy"),
    ("a vegetarian lasagna", "cooking"), ("the GIL in CPython", "programming"),
    ("a job interview", "careers"), ("climate zones", "geography"),
]
OPENERS = [
    "Can you explain {t} to me like I am new to {d}?",
    "I have been reading about {t} and I am confused. What is the simplest way to understand it?",
    "Write a short guide to {t}.",
    "What are the most common mistakes people make with {t}?",
    "My friend says {t} is easy, but I keep getting it wrong. Can you walk me through it step by step?",
    "Give me three practical tips about {t}, with one example each.",
    "How would you teach {t} to a class of teenagers who are not interested in {d}?",
    "Compare two ways of approaching {t} and tell me which one you would pick.",
]
FOLLOW_UPS = [
    "Thanks. Can you make that shorter?",
    "Could you give a concrete example?",
    "What would change if I only had an hour?",
    "Is there anything I should avoid?",
    "Can you summarise that as a checklist?",
]
SUBJECTS = ["The first thing to notice", "A useful way to think about it", "In practice",
            "Most beginners find", "One common approach", "The key idea", "A good rule of thumb",
            "If you are short on time", "Experts in {d} often say", "Another point worth making"]
VERBS = ["is that", "suggests that", "shows that", "means that", "helps because"]
CLAUSES = [
    "small steps repeated every day matter more than one big effort",
    "{t} becomes clearer once you try it on a real example",
    "you should check each assumption before moving on",
    "the details depend on your goals and the tools you have",
    "writing things down makes the pattern easier to see",
    "the simplest version usually works better than a clever one",
    "you can always refine the result after a first rough pass",
    "mistakes early on are normal and teach you the most",
    "comparing two cases side by side reveals what really changes",
    "{t} connects to several other ideas in {d}",
    "timing and order are more important than people expect",
    "a short break often helps you spot what went wrong",
]


def sentence(rng: random.Random, topic: str, domain: str) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(CLAUSES)}."
    return text.format(t=topic, d=domain)


def answer(rng: random.Random, topic: str, domain: str, sentences: int) -> str:
    parts = [f"Sure, here is an overview of {topic}."]
    parts += [sentence(rng, topic, domain) for _ in range(sentences)]
    if rng.random() < 0.4:
        parts.append("\n\n" + "\n".join(f"{i}. {sentence(rng, topic, domain)}"
                                        for i in range(1, rng.randint(3, 5) + 1)))
    parts.append("Let me know if you want more detail on any part.")
    return " ".join(parts)


def conversation(rng: random.Random, index: int) -> dict[str, object]:
    topic, domain = rng.choice(TOPICS)
    turns = [{"from": "human", "value": rng.choice(OPENERS).format(t=topic, d=domain)},
             {"from": "gpt", "value": answer(rng, topic, domain, rng.randint(3, 14))}]
    for _ in range(rng.choice([0, 0, 1])):
        turns.append({"from": "human", "value": rng.choice(FOLLOW_UPS)})
        turns.append({"from": "gpt", "value": answer(rng, topic, domain, rng.randint(2, 6))})
    return {"id": f"synthetic-{index:03d}", "conversations": turns}


def main() -> None:
    rng = random.Random(SEED)
    data = [conversation(rng, i) for i in range(COUNT)]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
