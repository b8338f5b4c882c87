"""How srdistill fetches a file it lacks: online by default, offline on request, through a mirror if one is named.

The policy lives in environment variables so that every process of a run (torchrun ranks, Ray workers)
agrees with the command that started it:

- ``SRDISTILL_OFFLINE=1`` (``--offline``): nothing is fetched; a missing file is reported, not downloaded.
- ``SRDISTILL_MIRROR=URL`` (``--mirror URL``): ``https://HOST/PATH`` is fetched from ``URL/HOST/PATH``,
  one folder per upstream host, same path below it.
- ``HF_ENDPOINT`` (the Hub's own variable): files on huggingface.co come from ``HF_ENDPOINT/PATH`` instead.

A download streams into a hidden temporary file next to its destination and is renamed into place only
when it is complete and checked (safeload.check_download: its published SHA-256 where one exists, else a load
that runs no code), so a failed, truncated or hostile download never leaves a file where a library would take
it for the real one.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from srdistill.core.atomic import atomic_path
from srdistill.core.errors import UserError

OFFLINE_ENV = "SRDISTILL_OFFLINE"
MIRROR_ENV = "SRDISTILL_MIRROR"
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_HOSTS = ("huggingface.co",)
TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 3.0
# Where weights come from when no mirror or endpoint is named (pyiqa's files are on the Hub).
PROBE_URL = "https://huggingface.co/"
_CHUNK = 1 << 20


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class DownloadFailed(UserError):
    """A file could not be fetched; the message names the URL and why, and says the cache was left as it was."""


@dataclass(frozen=True)
class DownloadPolicy:
    """Whether files may be fetched, and from where."""

    offline: bool = False
    mirror: str | None = None
    hf_endpoint: str | None = None

    def source(self, url: str) -> str:
        """The URL a file is actually fetched from: HF_ENDPOINT for huggingface.co, else the mirror, else `url`."""
        parts = urllib.parse.urlsplit(url)
        if not parts.scheme.startswith("http") or not parts.netloc:
            return url
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if self.hf_endpoint and url.startswith(self.hf_endpoint.rstrip("/") + "/"):
            return url  # built from HF_ENDPOINT already (pyiqa builds its URLs with huggingface_hub at import)
        if self.hf_endpoint and parts.hostname in HF_HOSTS:
            return self.hf_endpoint.rstrip("/") + path
        if self.mirror:
            return f"{self.mirror.rstrip('/')}/{parts.netloc}{path}"
        return url


def current_policy() -> DownloadPolicy:
    """The policy the environment states now."""
    return DownloadPolicy(offline=_truthy(os.environ.get(OFFLINE_ENV)),
                          mirror=os.environ.get(MIRROR_ENV) or None,
                          hf_endpoint=os.environ.get(HF_ENDPOINT_ENV) or None)


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a TCP connection to `url`'s host (or to the proxy the environment names for it) does not open within
    `timeout` seconds, name lookup included; None when it opens."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: the name lookup itself takes no timeout
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc) or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def offline_unless_reachable(url: str = PROBE_URL, timeout: float = PROBE_TIMEOUT_S) -> DownloadPolicy:
    """Once per run, before anything is fetched: when the policy is online with no mirror or endpoint named and
    `url`'s host cannot be reached, go offline (this process and the ones it starts) and say so in one sentence,
    instead of letting every file wait through its own retries. A named mirror or endpoint is left to report its
    own failures, file by file."""
    policy = current_policy()
    if policy.offline or policy.mirror or policy.hf_endpoint:
        return policy
    why = unreachable(url, timeout)
    if why is None:
        return policy
    host = urllib.parse.urlsplit(url).hostname
    print(f"{host} cannot be reached ({why}), so this run is offline: metrics whose weights are not cached are "
          "skipped; fetch them on a connected machine with `evaluate weights --download` (or copy a cache in with "
          "`evaluate weights --import DIR`).", file=sys.stderr)
    return configure(offline=True)


def add_flags(parser) -> None:
    """--offline and --mirror, as every command that may fetch weights spells them; pass the parsed values to
    configure()."""
    parser.add_argument("--offline", action="store_true", help="fetch nothing; a metric whose weights are missing is "
                        "skipped with the file, path and URL (default: $SRDISTILL_OFFLINE, else online)")
    parser.add_argument("--mirror", metavar="URL", help="fetch https://HOST/PATH from URL/HOST/PATH instead (default: "
                        "$SRDISTILL_MIRROR); Hugging Face files follow HF_ENDPOINT when it is set")


def configure(offline: bool | None = None, mirror: str | None = None) -> DownloadPolicy:
    """Apply CLI choices (None keeps what the environment says) to this process and the ones it starts."""
    if offline:
        os.environ[OFFLINE_ENV] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        parts = urllib.parse.urlsplit(mirror)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"mirror {mirror!r} (--mirror or ${MIRROR_ENV}) is not an http(s) URL; "
                            f"pass e.g. --mirror http://mirror.lan/weights.")
        os.environ[MIRROR_ENV] = mirror.rstrip("/")
    sync_hub_constants()
    return current_policy()


def sync_hub_constants() -> None:
    """huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, at import; make a later change count too."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None:
        return
    constants.HF_HUB_OFFLINE = hf_offline()
    endpoint = os.environ.get(HF_ENDPOINT_ENV)
    if endpoint:
        constants.ENDPOINT = endpoint.rstrip("/")
        constants.HUGGINGFACE_CO_URL_TEMPLATE = constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"


def hf_offline() -> bool:
    """Hugging Face files are offline with ours (SRDISTILL_OFFLINE) or with the Hub's own switch (HF_HUB_OFFLINE)."""
    return current_policy().offline or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def hf_cache_dir() -> Path:
    """Hugging Face's hub cache as the environment states it now (HF_HUB_CACHE, else HF_HOME/hub, else the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"the server cannot be reached ({exc.reason})"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection closed after {len(exc.partial)} bytes, before the end of the file"
    return str(exc) or type(exc).__name__


class _LinkedEtag(urllib.request.HTTPRedirectHandler):
    """Keeps the SHA-256 that Hugging Face states for an LFS file (`X-Linked-Etag` on the resolve redirect)."""

    sha256: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.sha256 = _sha256_header(headers) or self.sha256
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _sha256_header(headers) -> str | None:
    value = (headers.get("X-Linked-Etag") or "").strip().strip('"').removeprefix("W/").strip('"').lower()
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def fetch_file(url: str, dst: str | os.PathLike, *, sha256_prefix: str | None = None, progress: bool = True,
               policy: DownloadPolicy | None = None) -> Path:
    """Download `url` (through the policy's mirror) to `dst` atomically, with a progress bar named after the file;
    the file is checked (see the module docstring) before it takes its name."""
    from tqdm import tqdm

    from srdistill.core.fetch.safeload import check_download

    policy = policy or current_policy()
    source, dst = policy.source(url), Path(dst)
    via = f" (mirror of {url})" if source != url else ""
    try:
        request = urllib.request.Request(source, headers={"User-Agent": "srdistill"})
        etag = _LinkedEtag()
        with urllib.request.build_opener(etag).open(request, timeout=TIMEOUT_S) as response:
            stated = _sha256_header(response.headers) or etag.sha256
            total = int(response.headers.get("Content-Length") or 0) or None
            dst.parent.mkdir(parents=True, exist_ok=True)
            received = 0
            print(f"downloading {dst.name} from {source} to {dst}", file=sys.stderr)
            # Checked under its temporary name: a file that fails a check never appears at dst.
            with atomic_path(dst) as tmp:
                with open(tmp, "wb") as out, tqdm(total=total, desc=dst.name, unit="B", unit_scale=True,
                                                  unit_divisor=1024, disable=not progress, file=sys.stderr) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                if total is not None and received != total:
                    raise ValueError(f"the server sent {received} of {total} bytes")
                check_download(tmp, dst.name, sha256=stated, sha256_prefix=sha256_prefix)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadFailed(f"could not download {dst.name} from {source}{via}: {_reason(exc)}; "
                             f"nothing was written to {dst.parent}.") from None
    return dst
