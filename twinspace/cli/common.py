"""What every participant command shares: one set of connection options (``--broker``, ``--org``,
``--key``, ``--profile``; env ``TWINSPACE_BROKER_URL``, ``TWINSPACE_ORG_ID``, ``TWINSPACE_ORG_KEY``,
``TWINSPACE_PROFILE``; a profile file), ``--json``, and one way to turn a failure into a message that
says what was wrong and what to do (never a traceback).

The profile file (``$TWINSPACE_PROFILE_FILE``, default ``~/.config/twinspace/profiles.toml``)::

    [default]
    broker = "http://127.0.0.1:8000"
    org = "org_..."
    key = "~/.twinspace/keys/org_....pem"

Precedence: command-line option, then environment variable, then the chosen profile.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

# Data (names, ids, values) is printed as is: no emoji codes (`:id:`), no markup, no highlighting.
console = Console(emoji=False, highlight=False, soft_wrap=True)  # ids stay whole when copied
err_console = Console(stderr=True, emoji=False, highlight=False, soft_wrap=True)

PROFILE_FILE_ENV = "TWINSPACE_PROFILE_FILE"
DEFAULT_PROFILE_FILE = Path("~/.config/twinspace/profiles.toml")

JsonOpt = typer.Option(False, "--json", help="Print JSON (machine-readable) instead of text.")
_CONN_PARAMS = {
    "broker": (Optional[str], typer.Option(None, "--broker", "--url", envvar="TWINSPACE_BROKER_URL",
                                           help="Broker base URL, e.g. http://127.0.0.1:8000.")),
    "org": (Optional[str], typer.Option(None, "--org", "--org-id", envvar="TWINSPACE_ORG_ID",
                                        help="Your organisation id (org_...).")),
    "key": (Optional[Path], typer.Option(None, "--key", "--key-file", envvar="TWINSPACE_ORG_KEY",
                                         help="Your organisation's Ed25519 private key (PEM).")),
    "profile": (Optional[str], typer.Option(None, "--profile", envvar="TWINSPACE_PROFILE",
                                            help="Profile (a table) in the profile file; default: the one named default.")),
    "audience": (str, typer.Option("twinspace-broker", "--audience", envvar="TWINSPACE_AUDIENCE",
                                   help="The broker's issuer name.")),
}


class CliError(Exception):
    """A user-facing failure: what went wrong and what to do."""

    def __init__(self, message: str, hint: str | None = None, code: int = 2):
        super().__init__(message)
        self.message, self.hint, self.exit_code = message, hint, code


@dataclass
class Connection:
    broker: str
    org: str
    key: Path
    audience: str = "twinspace-broker"

    def client(self):
        from twinspace.client.broker import BrokerClient
        from twinspace.crypto import load_private_key

        key = load_key(self.key, load_private_key)
        import httpx

        return BrokerClient(httpx.Client(base_url=self.broker, timeout=60.0), self.org, key, self.audience)


def load_key(path: Path, loader):
    path = Path(path).expanduser()
    if not path.is_file():
        raise CliError(f"key file {path} does not exist", "pass --key with the PEM file `twinspace org create` wrote")
    try:
        return loader(path)
    except (ValueError, TypeError) as exc:
        head = path.read_bytes()[:40]
        what = ("a PEM file, but not an Ed25519 private key" if head.startswith(b"-----BEGIN")
                else "not a PEM file at all")
        raise CliError(f"{path} cannot be used as --key: it is {what}",
                       "pass the org's private key file (PEM, '-----BEGIN PRIVATE KEY-----') written by "
                       "`twinspace org create`") from None


def _profile(name: Optional[str]) -> dict[str, Any]:
    path = Path(os.environ.get(PROFILE_FILE_ENV) or DEFAULT_PROFILE_FILE).expanduser()
    if not path.is_file():
        if name:
            raise CliError(f"profile {name!r} asked for, but there is no profile file at {path}",
                           f"create it (see `twinspace --help`) or set {PROFILE_FILE_ENV}")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"profile file {path} cannot be read: {exc}", "fix the TOML syntax") from None
    section = data.get(name or "default")
    if section is None:
        if name:
            raise CliError(f"no profile [{name}] in {path}", f"profiles there: {', '.join(data) or 'none'}")
        return {}
    if not isinstance(section, dict):
        raise CliError(f"[{name or 'default'}] in {path} is not a table", "write broker/org/key under it")
    return section


def resolve(broker: Optional[str], org: Optional[str], key: Optional[Path], profile: Optional[str],
            audience: str = "twinspace-broker") -> Connection:
    prof = _profile(profile)
    broker = broker or prof.get("broker")
    org = org or prof.get("org")
    key = key or (Path(prof["key"]) if prof.get("key") else None)
    missing = [flag for flag, v, env in (("--broker", broker, "TWINSPACE_BROKER_URL"), ("--org", org, "TWINSPACE_ORG_ID"),
                                         ("--key", key, "TWINSPACE_ORG_KEY")) if not v]
    if missing:
        raise CliError(f"missing {', '.join(missing)}",
                       "give them as options, as TWINSPACE_BROKER_URL / TWINSPACE_ORG_ID / TWINSPACE_ORG_KEY, "
                       f"or in a profile file ({DEFAULT_PROFILE_FILE})")
    if not str(broker).startswith(("http://", "https://")):
        raise CliError(f"--broker {broker!r} is not an http(s) URL", "e.g. --broker http://127.0.0.1:8000")
    return Connection(str(broker).rstrip("/"), str(org), Path(key).expanduser(), prof.get("audience", audience))


def _problem_text(exc) -> tuple[str, str | None]:
    """Message and hint for a broker problem (RFC 9457), naming the fields at fault and their choices."""
    p = exc.problem if isinstance(exc.problem, dict) else {}
    detail = p.get("detail") or p.get("title") or ""
    parts = []
    for e in p.get("errors") or []:
        if isinstance(e, dict):
            loc = ".".join(str(x) for x in e.get("loc", e.get("location", [])) if x not in ("body", "query"))
            msg = e.get("msg") or e.get("message") or e.get("detail") or ""
            parts.append(f"{loc}: {msg}" if loc else str(msg))
    text = f"broker refused ({exc.code}): {detail}" + (f" — {'; '.join(parts)}" if parts else "")
    hint = {"unauthorized": "check --org and --key: the key must be the one registered for that org",
            "invalid_client": "check --org and --key: the key must be the one registered for that org",
            "forbidden": "your organisation's role does not allow this",
            "not_found": "check the id (copy it in full from a list command)"}.get(exc.code)
    return text, hint


@contextmanager
def guarded(broker_url: str | None = None) -> Iterator[None]:
    """Turn every expected failure into one error line and a hint; exit 1 (refused) or 2 (bad input)."""
    import httpx

    from twinspace.client.broker import BrokerError

    try:
        yield
    except typer.Exit:
        raise
    except CliError as exc:
        fail(exc.message, exc.hint, exc.exit_code)
    except BrokerError as exc:
        text, hint = _problem_text(exc)
        fail(text, hint, 1)
    except httpx.ConnectError:
        fail(f"cannot reach the broker at {broker_url or 'the given URL'}",
             "is it running (`twinspace serve`)? check --broker / TWINSPACE_BROKER_URL", 2)
    except httpx.TimeoutException:
        fail(f"the broker at {broker_url or 'the given URL'} did not answer in time", "try again later", 2)
    except httpx.HTTPError as exc:
        fail(f"talking to the broker failed: {exc}", "check --broker", 2)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), "check the path", 2)
    except ValueError as exc:  # raised by client-side checks with a sentence for the user
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, None, 2)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: still one line, never a traceback
        fail(f"internal error ({type(exc).__name__}: {str(exc)[:200]})",
             "please report it with the command you ran; nothing was changed on your side", 70)


def fail(message: str, hint: str | None = None, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err_console.print(f"  {escape(hint)}")
    raise typer.Exit(code)


def connected(fn):
    """Give a command the shared connection options; it receives ``conn: Connection`` and runs guarded."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "conn"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=typ)
             for name, (typ, opt) in _CONN_PARAMS.items()]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {n: kwargs.pop(n) for n in _CONN_PARAMS}
        with guarded(values.get("broker")):
            conn = resolve(values["broker"], values["org"], values["key"], values["profile"], values["audience"])
        with guarded(conn.broker):
            return fn(*args, conn=conn, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)
    wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "conn"},
                               **{n: t for n, (t, _) in _CONN_PARAMS.items()}}
    return wrapper


def handled(fn):
    """Run a command that needs no broker connection under ``guarded`` too (one line, never a traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with guarded():
            return fn(*args, **kwargs)

    return wrapper


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n")


def choice(value: Optional[str], choices: tuple[str, ...], option: str) -> Optional[str]:
    """Validate a value against its choices, listing them when it is wrong (typos get a suggestion)."""
    if value is None or value in choices:
        return value
    import difflib

    near = difflib.get_close_matches(value, choices, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise CliError(f"{option} {value!r} is not one of: {', '.join(choices)}", f"{hint}choose one of those")


def download_progress(label: str) -> Progress:
    return Progress(TextColumn(f"[cyan]{escape(label)}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)


def human(value: Any) -> str:
    """A value for a person: no Python reprs (dicts become `k=v, ...`, None becomes '—')."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} = {human(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(human(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
