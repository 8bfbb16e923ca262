"""``pykdumpctl propagate``: set up key authentication to kdump.conf's ssh target, as ``kdumpctl propagate``.

Create the ``sshkey`` (default /root/.ssh/kdump_id_rsa) without a passphrase when it does not exist,
install its public half on the target with ``ssh-copy-id`` (which asks for the password once), then check
that a non-interactive ``ssh -i KEY`` can create the dump directory there, the first thing capture does.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from pathlib import Path

from ..errors import DumpfilterError
from .kdumpconf import parse_file


class PropagateError(DumpfilterError):
    pass


def _run(argv: list[str]) -> int:
    print(shlex.join(argv), flush=True)
    try:
        return subprocess.run(argv).returncode
    except FileNotFoundError:
        raise PropagateError(f"{argv[0]} is not installed (it comes with openssh-client)") from None


def propagate(config: str, ssh_options: list[str]) -> int:
    conf = parse_file(config)
    if conf.target_kind != "ssh" or not conf.target_spec:
        raise PropagateError(f"{config} has no ssh target: propagate is only for 'ssh user@host'")
    target = conf.target_spec
    key = Path(conf.sshkey)
    if key.exists():
        print(f"using the existing key {key}")
    else:
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        rc = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kdump@{os.uname().nodename}",
                   "-f", str(key)])
        if rc != 0 or not key.exists():
            raise PropagateError(f"ssh-keygen could not create {key} (exit {rc})")
        print(f"created the key {key}")
    pub = Path(f"{key}.pub")
    if not pub.exists():
        raise PropagateError(f"{pub} is missing: the public half of {key} is needed (ssh-keygen -y -f {key})")
    rc = _run(["ssh-copy-id", "-i", str(pub), *ssh_options, target])
    if rc != 0:
        raise PropagateError(f"ssh-copy-id could not install {pub} on {target} (exit {rc})")
    check = ["ssh", *ssh_options, "-i", str(key), "-o", "BatchMode=yes", target, f"mkdir -p {shlex.quote(conf.path)}"]
    rc = _run(check)
    if rc != 0:
        raise PropagateError(f"{target} does not accept {key} without a password, or cannot create {conf.path} "
                             f"(exit {rc})")
    print(f"{key} has been installed on {target}; dumps go to {target}:{conf.path}")
    return 0


def cmd_propagate(args: argparse.Namespace) -> int:
    return propagate(args.config, args.ssh_option)


def add_parser(sub: argparse._SubParsersAction, default_config: str) -> None:
    p = sub.add_parser(
        "propagate", help="create the sshkey of kdump.conf's ssh target and install it there",
        description="For 'ssh user@host' in kdump.conf: create sshkey (default /root/.ssh/kdump_id_rsa, an "
        "ed25519 key without passphrase) when missing, install it with ssh-copy-id, and check that "
        "ssh -i KEY -o BatchMode=yes can create path on the target.")
    p.add_argument("--config", default=default_config, metavar="FILE", help=f"default {default_config}")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="extra argument for ssh-copy-id and ssh, e.g. --ssh-option=-p2222 (repeat)")
    p.set_defaults(func=cmd_propagate)
