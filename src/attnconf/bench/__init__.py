"""`attnconf bench`: time and peak memory of attention kernels against sequence length.

`worker` runs one subject in its own process, `memory` measures resident memory from /proc,
`plot` draws the log-log figures; the command itself is `attnconf.commands.bench`.
"""
