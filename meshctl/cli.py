"""`meshctl`: run and inspect the local mesh."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

from web3 import Web3

from mesh.access import ADMIN_ROLES
from mesh.clients import EDGE_NAME
from mesh.keys import KeyringError, Keystore, TrustFile, load_kek
from mesh.logs import configure_logging
from mesh.migrate import upgrade_all
from mesh.services import IDENTITIES, SERVICES
from meshctl import chain_tools, operator
from meshctl.admins import create_admin, list_admins, verify_audit_log
from meshctl.caught_mail import read_mail
from meshctl.certs import make_dev_certs
from meshctl.edge import deployed_edge_config, envoy_binary
from meshctl.operator import TIME_UNITS, mint_codes, rate_limits
from meshctl.probes import degraded, probe_grpc_health, probe_http
from meshctl.settings import StackSettings
from meshctl.stack import Part, Stack, StackFile, private_state_dir, probe, process_alive, stop_pid

_DETACH_TIMEOUT = 180.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="meshctl", description="Run and inspect the local invitemesh stack.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything; Ctrl-C stops it")
    up.add_argument("--detach", action="store_true", help="start in the background and return when ready")
    up.add_argument("--replicas", type=int, help="processes of every service and web_svc (MESH_REPLICAS)")
    commands.add_parser("down", help="stop a detached stack")
    status = commands.add_parser("status", help="health of every part")
    status.add_argument("--json", action="store_true")
    logs = commands.add_parser("logs", help="print a part's log")
    logs.add_argument("part", help="a service name (auth_svc …), envoy, smtp, redis or postgres")
    logs.add_argument("-f", "--follow", action="store_true")
    commands.add_parser("migrate", help="bring every service's schema to its newest revision")
    keys = commands.add_parser("keys", help="service signing keys (see mesh/keys.py for rotation)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("init", help="a key for every service that has none")
    key_commands.add_parser("list", help="trusted keys and the signing key of each service")
    for verb, text in (
        ("add", "a new trusted key, not yet signing"),
        ("activate", "sign with KID"),
        ("retire", "trust KID no more"),
    ):
        command = key_commands.add_parser(verb, help=text)
        command.add_argument("service")
        if verb != "add":
            command.add_argument("kid")
    invites = commands.add_parser("invites", help="invite codes of the local stack")
    invite_commands = invites.add_subparsers(dest="invites_command", required=True)
    mint = invite_commands.add_parser("mint", help="print fresh codes")
    mint.add_argument("--count", type=int, default=1)
    mint.add_argument("--max-uses", type=int, default=1, help="0 for unlimited")
    mint.add_argument("--expires-in", type=_duration, help="for example 30m, 12h, 7d, 2w")
    mint.add_argument("--campaign", help="campaign name; made when missing")
    mint.add_argument(
        "--invite-quota", type=int, default=0, help="codes each person the campaign brings in gets (new campaigns)"
    )
    mint.add_argument("--json", action="store_true")
    limits = commands.add_parser("ratelimits", help="the edge's rate-limit rules (served by ratelimit_svc)")
    limit_commands = limits.add_subparsers(dest="ratelimits_command", required=True)
    put = limit_commands.add_parser("set", help="set the rule of one route, or of every other route (*)")
    put.add_argument("route", help="a gRPC method, such as /invitemesh.invite.v1.InviteService/CheckCode, or *")
    put.add_argument("requests", type=int, help="requests per client address per unit")
    put.add_argument("--per", choices=list(TIME_UNITS), default="minute")
    put.add_argument("--fail-closed", action="store_true", help="refuse while the counters are unreachable")
    reset = limit_commands.add_parser("reset", help="drop the rule set for a route: its default applies again")
    reset.add_argument("route")
    listing = limit_commands.add_parser("list", help="the rules in force: those set over the defaults")
    listing.add_argument("--json", action="store_true")
    admins = commands.add_parser("admins", help="admin accounts (served by admin_svc)")
    admin_commands = admins.add_subparsers(dest="admins_command", required=True)
    create = admin_commands.add_parser("create", help="an admin; the password comes from stdin or a prompt")
    create.add_argument("email")
    create.add_argument("--role", choices=list(ADMIN_ROLES), required=True)
    create.add_argument("--json", action="store_true")
    admin_listing = admin_commands.add_parser("list", help="every admin")
    admin_listing.add_argument("--json", action="store_true")
    audit = commands.add_parser("audit", help="the admins' audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_commands.add_parser("verify", help="walk the hash chain and check every signature with trust.json")
    certs = commands.add_parser("certs", help="a dev CA and certificates for mutual TLS (MESH_TLS=1)")
    certs.add_argument("names", nargs="*", help="more certificate names beyond every service, envoy and meshctl")
    edge = commands.add_parser("edge", help="the edge of a deployment: services where MESH_SERVICE_ADDRESSES says")
    edge_commands = edge.add_subparsers(dest="edge_command", required=True)
    edge_commands.add_parser("config", help="print Envoy's configuration (it holds tokens the KEK gives: a secret)")
    edge_commands.add_parser("serve", help="write that configuration into the state dir and run Envoy with it")
    health = commands.add_parser("health", help="exit status 0 when a part serves (for container health checks)")
    health.add_argument("target", help="host:port of a service (gRPC health), or an http:// URL")
    health.add_argument("--service", default="", help="the gRPC service name to ask about (default: the server)")
    mail = commands.add_parser("mail", help="messages caught by the dev SMTP sink")
    mail_commands = mail.add_subparsers(dest="mail_command", required=True)
    mail_list = mail_commands.add_parser("list")
    mail_list.add_argument("--to", help="only messages to this address")
    mail_list.add_argument("--json", action="store_true")
    chain = commands.add_parser("chain", help="the development chain chain_svc polls (or MESH_CHAIN_RPC_URL)")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True)
    fund = chain_commands.add_parser("fund", help="send ether from the chain's first account")
    fund.add_argument("address")
    fund.add_argument("amount", type=Decimal, help="in ether, e.g. 1.5")
    mine = chain_commands.add_parser("mine", help="mine empty blocks")
    mine.add_argument("blocks", nargs="?", type=int, default=1)

    args = parser.parse_args(argv)
    # Whatever meshctl and the parts it starts write (keys, logs, caught mails with their codes
    # and reset links, data) is for the user who runs it alone.
    os.umask(0o077)
    if args.command == "up" and args.replicas is not None:
        # As a setting, so the detached supervisor sees it and it is checked like one.
        os.environ["MESH_REPLICAS"] = str(args.replicas)
    settings = StackSettings()
    configure_logging("meshctl", settings.log_level)
    handlers = {
        "up": lambda: _up(settings, args.detach),
        "down": lambda: _down(settings),
        "status": lambda: _status(settings, args.json),
        "logs": lambda: _logs(settings, args.part, args.follow),
        "migrate": lambda: _migrate(settings),
        "keys": lambda: _keys(settings, args),
        "certs": lambda: _certs(settings, args.names),
        "invites": lambda: operator.run(mint_codes(settings, args)),
        "ratelimits": lambda: operator.run(rate_limits(settings, args)),
        "admins": lambda: operator.run(
            create_admin(settings, args) if args.admins_command == "create" else list_admins(settings, args)
        ),
        "audit": lambda: operator.run(verify_audit_log(settings, args)),
        "mail": lambda: _mail_list(settings, args.to, args.json),
        "chain": lambda: _chain(settings, args),
        "edge": lambda: _edge(settings, args.edge_command),
        "health": lambda: _health(args.target, args.service),
    }
    sys.exit(handlers[args.command]())


def _running(settings: StackSettings) -> StackFile | None:
    found = StackFile.read(settings.state_dir.absolute())
    return found if found is not None and process_alive(found.supervisor_pid) else None


def _up(settings: StackSettings, detach: bool) -> int:
    if (running := _running(settings)) is not None:
        print(f"already running (supervisor pid {running.supervisor_pid}); `meshctl down` first", file=sys.stderr)
        return 1
    if detach:
        return _up_detached(settings)
    return asyncio.run(_supervise(settings))


async def _supervise(settings: StackSettings) -> int:
    stack = Stack(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stack.up()
    except Exception as error:
        print(f"meshctl up failed: {error}", file=sys.stderr)
        return 1
    _print_summary(stack.file)
    print("Ctrl-C stops everything.", flush=True)
    await stack.supervise(stopping)
    print("stopping …", flush=True)
    stack.down()
    return 0


def _up_detached(settings: StackSettings) -> int:
    state_dir = private_state_dir(settings)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    StackFile(state_dir / "stack.json").path.unlink(missing_ok=True)
    with open(state_dir / "logs" / "meshctl.log", "ab") as log_file:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "meshctl.cli", "up"],
            stdout=log_file,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "MESH_STATE_DIR": str(state_dir)},
            start_new_session=True,
        )
    deadline = time.monotonic() + _DETACH_TIMEOUT
    while time.monotonic() < deadline:
        found = StackFile.read(state_dir)
        if found is not None and found.status == "ready":
            _print_summary(found)
            print("`meshctl down` stops everything.")
            return 0
        if supervisor.poll() is not None:
            error = found.error if found is not None else None
            print(f"meshctl up failed: {error or 'see ' + str(state_dir / 'logs' / 'meshctl.log')}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("meshctl up: not ready in time; stopping", file=sys.stderr)
    supervisor.terminate()
    return 1


def _print_summary(stack: StackFile) -> None:
    print("invitemesh is up:")
    for part in stack.parts:
        where = "" if part.embedded else " (external)"
        extra = "".join(f"  {key}={value}" for key, value in part.details.items() if key != "grpc_service")
        print(f"  {part.name:<10} {part.address}{where}{extra}")
    print(f"  state      {stack.path.parent}", flush=True)


def _down(settings: StackSettings) -> int:
    state_dir = settings.state_dir.absolute()
    found = StackFile.read(state_dir)
    if found is None:
        print("nothing running")
        return 0
    if process_alive(found.supervisor_pid):
        os.kill(found.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.grace_period + 60
        while process_alive(found.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    # Whatever a dead or stuck supervisor left behind is stopped here, so nothing outlives `down`.
    for part in reversed(found.parts):
        if part.pid is not None:
            stop_pid(part.pid, timeout=10, signum=signal.SIGINT if part.kind == "postgres" else signal.SIGTERM)
    stop_pid(found.supervisor_pid, timeout=5)
    found.path.unlink(missing_ok=True)
    print("stopped")
    return 0


def _status(settings: StackSettings, as_json: bool) -> int:
    found = _running(settings)
    if found is None:
        print(json.dumps({"running": False}) if as_json else "not running")
        return 3

    async def probe_all() -> tuple[list[str | None], list[list[str]]]:
        failures = await asyncio.gather(*(probe(part, settings) for part in found.parts))
        notes = await asyncio.gather(*(_notes(part) for part in found.parts))
        return list(failures), list(notes)

    failures, notes = asyncio.run(probe_all())
    if as_json:
        parts = [
            {**asdict(part), "healthy": failure is None, "problem": failure, "notes": noted}
            for part, failure, noted in zip(found.parts, failures, notes, strict=True)
        ]
        print(json.dumps({"running": True, "status": found.status, "parts": parts}, indent=2))
    else:
        for part, failure, noted in zip(found.parts, failures, notes, strict=True):
            state = "DOWN: " + failure if failure else "SERVING" + (f" ({', '.join(noted)})" if noted else "")
            print(f"{part.name:<10} {state:<40} {part.address}")
    return 0 if not any(failures) else 1


async def _notes(part: Part) -> list[str]:
    restarted = [f"started again {part.restarts}x, last exit: {part.last_exit}"] if part.restarts else []
    metrics = part.details.get("metrics")
    return restarted + (await degraded(metrics) if part.kind == "service" and metrics else [])


def _edge(settings: StackSettings, command: str) -> int:
    try:
        config = deployed_edge_config(settings)
    except (ValueError, KeyringError) as error:
        print(f"meshctl edge: {error}", file=sys.stderr)
        return 2
    if command == "config":
        print(config, end="")
        return 0
    # The file holds the edge's tokens: the caller's alone, in a state dir it may not own (a
    # Kubernetes emptyDir).
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_file = settings.state_dir.absolute() / "envoy.yaml"
    config_file.unlink(missing_ok=True)
    with os.fdopen(os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(config)
    envoy = envoy_binary()
    # Envoy takes this process's place: in a container it gets the signals, as PID 1.
    os.execv(envoy, [envoy, "-c", str(config_file), "--disable-hot-restart", "--log-level", "warn"])  # noqa: S606


def _health(target: str, service: str) -> int:
    failure = asyncio.run(probe_http(target) if "://" in target else probe_grpc_health(target, service))
    if failure:
        print(f"{target}: {failure}", file=sys.stderr)
    return 1 if failure else 0


def _logs(settings: StackSettings, name: str, follow: bool) -> int:
    found = StackFile.read(settings.state_dir.absolute())
    part = found.part(name) if found is not None else None
    log_path = (
        Path(part.log) if part is not None and part.log else settings.state_dir.absolute() / "logs" / f"{name}.log"
    )
    if not log_path.exists():
        print(f"no log for {name!r} at {log_path}", file=sys.stderr)
        return 1
    with open(log_path, "rb") as log_file:
        sys.stdout.buffer.write(log_file.read())
        sys.stdout.flush()
        while follow:
            chunk = log_file.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


def _database_url(settings: StackSettings) -> str | None:
    """MESH_DATABASE_URL, else the running stack's embedded PostgreSQL (None, said why, if neither)."""
    found = _running(settings)
    postgres = found.part("postgres") if found is not None else None
    database_url = settings.database_url or (postgres.address if postgres is not None else None)
    if not database_url:
        print("set MESH_DATABASE_URL or start the stack with `meshctl up`", file=sys.stderr)
    return database_url


def _migrate(settings: StackSettings) -> int:
    database_url = _database_url(settings)
    if not database_url:
        return 1
    asyncio.run(upgrade_all(SERVICES, database_url))
    print("migrated: " + ", ".join(spec.schema for spec in SERVICES))
    return 0


def _keys(settings: StackSettings, args: argparse.Namespace) -> int:
    keystore = Keystore(settings.resolved_keys_dir, load_kek(settings, create=args.keys_command == "init"))
    try:
        if args.keys_command == "init":
            made = keystore.ensure(IDENTITIES)
            print(f"keys made for: {', '.join(made)}" if made else "every service and meshctl have a key")
        elif args.keys_command == "list":
            trust = TrustFile.read(keystore.trust_path)
            for service in sorted(trust.services):
                for kid in trust.public_keys(service):
                    print(f"{service:<12} {kid}{'  (signing)' if kid == trust.signing_kid(service) else ''}")
        elif args.keys_command == "add":
            print(keystore.add(args.service))
        elif args.keys_command == "activate":
            keystore.activate(args.service, args.kid)
        else:
            keystore.retire(args.service, args.kid)
    except KeyringError as error:
        print(f"meshctl keys: {error}", file=sys.stderr)
        return 1
    return 0


def _certs(settings: StackSettings, names: list[str]) -> int:
    everyone = [*IDENTITIES, EDGE_NAME, *names]
    made = make_dev_certs(settings.resolved_certs_dir, everyone)
    print(f"certificates in {settings.resolved_certs_dir}: made {', '.join(made) or 'none (all present)'}")
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> datetime.timedelta:
    number, unit = text[:-1], text[-1:]
    if not number.isdigit() or unit not in _UNITS or int(number) == 0:
        raise argparse.ArgumentTypeError("a positive number and one of s, m, h, d, w, such as 7d")
    return datetime.timedelta(seconds=int(number) * _UNITS[unit])


def _mail_list(settings: StackSettings, to: str | None, as_json: bool) -> int:
    found = StackFile.read(settings.state_dir.absolute())
    smtp = found.part("smtp") if found is not None else None
    if smtp is not None and not smtp.embedded:
        print(f"mail goes to the external server {smtp.address}; the sink holds nothing", file=sys.stderr)
        return 1
    messages = read_mail(settings.state_dir.absolute() / "mail", to)
    if as_json:
        print(json.dumps([asdict(message) for message in messages], indent=2))
    else:
        for message in messages:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(message.received_at))
            print(f"{stamp}  {', '.join(message.rcpt_tos):<32} {message.subject}")
    return 0


def _chain(settings: StackSettings, args: argparse.Namespace) -> int:
    found = StackFile.read(settings.state_dir.absolute())
    node = found.part("chain") if found is not None else None
    rpc_url = node.address if node is not None else settings.chain_rpc_url
    if rpc_url is None:
        print("no chain: start one with `meshctl up`, or set MESH_CHAIN_RPC_URL", file=sys.stderr)
        return 1
    if args.chain_command == "fund":
        if args.amount <= 0:
            print("the amount is a positive number of ether", file=sys.stderr)
            return 2
        if not Web3.is_address(args.address):
            print(f"not an address: {args.address}", file=sys.stderr)
            return 2
        sent = chain_tools.fund(rpc_url, args.address, args.amount)
        print(f"sent {args.amount} ether to {Web3.to_checksum_address(args.address)} in {sent}")
        return 0
    head = chain_tools.mine(rpc_url, args.blocks)
    print(f"mined {args.blocks}; the head is block {head}")
    return 0


if __name__ == "__main__":
    main()
