"""Remote mode: SSH to a cluster's login host, run slurmserve there, forward ports.

- `config`: `--remote` (profile or [user@]host[:port]) through the OpenSSH config; host keys.
- `session`: the (re)connectable SSH connection (paramiko, from the `remote` extra), commands
  run through the shipped `wrapper.sh`, SFTP downloads.
- `commands`: slurmserve on the login host, and its errors turned into advice.
- `agent`: the login host's side (`python -m slurmserve.remote.agent`), answering in `wire`
  records (JobRecord, JobStatus, Progress; one tagged JSON line each).
- `tunnel`: a local port forwarded to a job's endpoint, surviving reconnects.
"""
