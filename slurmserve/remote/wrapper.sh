# Runs on the login host before every slurmserve command: `sh -c WRAPPER sh [--hangup] CMD...`.
# Exports KEY=VALUE lines read from stdin up to an empty line (secrets travel there, never in
# argv), then runs the command. With --hangup the command is ended when our side closes the
# channel (EOF on stdin), so `logs -f` does not outlive Ctrl+C.
# session.py sends it as one line (comments dropped, lines joined by spaces: any login shell
# parses that quoted argument), so every line ends where a space may follow.
while IFS= read -r kv && [ -n "$kv" ]; do export "$kv"; done;
if [ "$1" = --hangup ]; then shift; exec 3<&0; "$@" </dev/null 3<&- & p=$!;
    { cat >/dev/null; kill -TERM "$p"; } <&3 >/dev/null 2>&1 & wait "$p";
else exec "$@"; fi
