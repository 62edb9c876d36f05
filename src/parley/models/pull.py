"""Fetch a GGUF model file from a Hugging Face hub (or a mirror of one): resumable, with a progress bar, verified
against the hub's checksum, and checked to be a GGUF before it takes its name.

Two ways to name a file (`parse_spec`):
    hf://OWNER/REPO/FILE.gguf[@REVISION]      one file of a repo, at a branch, tag or commit (default main)
    OWNER/REPO:QUANT[@REVISION]               the one .gguf file of the repo whose name holds the quant tag
                                              (case-insensitive), as Ollama's and llama-server's `-hf` read it

What huggingface_hub does here, and what parley does itself. `hf_hub_download` would be the one call, but it
(2.4) downloads into a temporary file unique to the process and deletes it on any failure: an interrupted pull
(Ctrl-C, a killed process, a connection that stays down) starts again from the first byte. So parley uses the
pieces `hf_hub_download` is made of: `get_hf_file_metadata` (the HEAD of /resolve: the commit, the checksum
from X-Linked-Etag or ETag, the size, the CDN redirect, the hub's errors as types), `HfApi.model_info` (a repo's
files, for the quant shorthand) and `http_get` (the GET with a Range from a given offset, its own retries of a
dropped connection from where it stopped, a server that ignores the Range, the size check, huggingface_hub's
tqdm bar). The partial file is parley's: `.FILE.<sha256>.incomplete` beside the destination, kept when a pull
stops, continued by the next pull of the same file (keyed by the hub's checksum, so another revision never
continues it), locked while a pull writes it. huggingface_hub checks the size only; parley hashes the file and
compares it with the hub's checksum, then reads its GGUF header, then renames it into place. Xet storage is
not used: the hub's /resolve serves the same bytes over plain HTTP, and the HTTP path is the one that resumes.

HF_ENDPOINT is read at call time (huggingface_hub reads it once, at import), and every call is given the
endpoint explicitly; the token is huggingface_hub's (HF_TOKEN, or `hf auth login`) unless one is passed.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers, validate_repo_id
from tqdm import tqdm

from parley.engine.gguf import read_metadata
from parley.errors import Conflict, InvalidRequest, LimitExceeded, ModelError, NotFound

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
FORMS = "hf://OWNER/REPO/FILE.gguf[@REVISION] or OWNER/REPO:QUANT[@REVISION]"
_FIX = "set HF_ENDPOINT to a mirror, or download the file and `parley models add PATH`"
MB = 1024 * 1024

# a user or repo name; the hub's own rule (no '--', '..', a '-' or '.' at either end) is huggingface_hub's
# validate_repo_id, in parse_spec
_NAME = r"[\w.-]{1,96}"
_HF_URL = re.compile(rf"hf://(?P<repo>{_NAME}/{_NAME})/(?P<file>[^@]+?\.(?i:gguf))(?:@(?P<rev>[^@\s]+))?")
# Ollama writes the shorthand with the hub's host in front (hf.co/OWNER/REPO:QUANT): taken as the same
_SHORT = re.compile(
    rf"(?:(?:hf\.co|huggingface\.co)/)?(?P<repo>{_NAME}/{_NAME}):(?P<quant>[A-Za-z0-9][\w.-]*)"
    r"(?:@(?P<rev>[^@\s]+))?"
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")

Progress = bool | Callable[[int, int | None], object]


@dataclass(frozen=True, slots=True)
class PullSpec:
    """A parsed spec: the repo, then either the file's path in it or a quant tag to find it by."""

    repo: str
    filename: str | None = None
    quant: str | None = None
    revision: str = DEFAULT_REVISION

    def __str__(self) -> str:
        at = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        return f"hf://{self.repo}/{self.filename}{at}" if self.filename else f"{self.repo}:{self.quant}{at}"


@dataclass(frozen=True, slots=True)
class Pulled:
    """A verified GGUF file on disk: where it is, what it is on the hub (`revision` is the commit), its hash."""

    path: Path
    repo: str
    filename: str
    revision: str
    sha256: str
    size: int


def parse_spec(spec: str) -> PullSpec:
    """`hf://OWNER/REPO/FILE.gguf[@REVISION]` or `OWNER/REPO:QUANT[@REVISION]`; anything else is refused."""
    text = spec.strip() if isinstance(spec, str) else ""
    if m := _HF_URL.fullmatch(text):
        wanted = PullSpec(m["repo"], filename=_safe_filename(m["file"], spec), revision=m["rev"] or DEFAULT_REVISION)
    elif m := _SHORT.fullmatch(text):
        wanted = PullSpec(m["repo"], quant=m["quant"], revision=m["rev"] or DEFAULT_REVISION)
    else:
        raise InvalidRequest(f"spec {spec!r} names no model file: write {FORMS}", param="spec")
    try:
        validate_repo_id(wanted.repo)
    except HFValidationError as e:
        raise InvalidRequest(f"spec {spec!r}: {wanted.repo!r} is not a repo name on the hub "
                             f"({str(e).splitlines()[0].rstrip('.')}): write {FORMS}", param="spec") from None
    return wanted


def match_quant(filenames: list[str], quant: str, repo: str) -> str:
    """The one .gguf file among `filenames` whose name holds `quant` (case-insensitive); none or several is an
    error listing the repo's .gguf files."""
    ggufs = sorted(f for f in filenames if f.lower().endswith(".gguf"))
    tag = quant.lower()
    # a vision projector (mmproj-*.gguf) sits beside the model and often carries its type tag (F16): never the model
    models = [f for f in ggufs if not PurePosixPath(f).name.lower().startswith("mmproj")]
    hits = [f for f in models if tag in PurePosixPath(f).name.lower()]
    if len(hits) > 1:
        # Q4_0 is inside Q4_0_4_4 too: when the tag stands alone (no letter, digit or '_' next to it) in one name,
        # that is the one meant
        alone = re.compile(rf"(?<![a-z0-9]){re.escape(tag)}(?![a-z0-9_])")
        exact = [f for f in hits if alone.search(PurePosixPath(f).name.lower())]
        hits = exact if len(exact) == 1 else hits
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(ggufs) or "none"
    if not hits:
        raise NotFound(f"no .gguf file in {repo} matches {quant!r}; its .gguf files: {listed}", param="spec")
    raise InvalidRequest(
        f"{quant!r} matches {len(hits)} .gguf files in {repo}: {', '.join(hits)}; name one as hf://{repo}/FILE",
        param="spec",
    )


def pull(
    spec: str | PullSpec,
    dest_dir: Path,
    *,
    endpoint: str | None = None,
    progress: Progress = True,
    token: str | bool | None = None,
) -> Pulled:
    """Download the file `spec` names into `dest_dir` (under its path in the repo), verified and checked to be a
    GGUF, and return what was pulled. A file already there with the hub's checksum is not downloaded again;
    a partial download left by an interrupted pull is continued.

    `endpoint`: the hub's URL (default $HF_ENDPOINT, else huggingface.co). `progress`: True shows
    huggingface_hub's progress bar, False nothing, a callable is called with (bytes done, total bytes or None).
    `token`: the hub token (default: huggingface_hub's, from HF_TOKEN or a login).
    """
    wanted = spec if isinstance(spec, PullSpec) else parse_spec(spec)
    hub = hub_endpoint(endpoint)
    bar = _bar_class(progress)
    with _hub_errors(hub, wanted, token):
        revision, filename = wanted.revision, wanted.filename
        if filename is None:
            info = HfApi(endpoint=hub, token=token, library_name="parley").model_info(
                wanted.repo, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT
            )
            files = [s.rfilename for s in info.siblings or []]
            filename = _safe_filename(match_quant(files, wanted.quant or "", wanted.repo), str(wanted))
            revision = info.sha or revision  # the listing's commit: the file is fetched from what was listed
        url = hf_hub_url(wanted.repo, filename, revision=revision, endpoint=hub)
        meta = get_hf_file_metadata(url, token=token, endpoint=hub, library_name="parley",
                                    timeout=constants.HF_HUB_ETAG_TIMEOUT)
    name = f"{wanted.repo}/{filename}"
    if not meta.commit_hash:
        raise ModelError(f"{hub} answered for {name} without an X-Repo-Commit header, so it is not a Hugging "
                         "Face hub: set HF_ENDPOINT to a hub or a mirror of one", param="HF_ENDPOINT")
    checksum = (meta.etag or "").lower()
    if not (_SHA256.fullmatch(checksum) or _GIT_SHA1.fullmatch(checksum)):
        raise ModelError(f"{hub} gives no checksum for {name} (ETag {meta.etag!r}), so the download could not "
                         "be verified: use a hub or mirror that sends X-Linked-Etag", param="HF_ENDPOINT")

    final = Path(dest_dir).expanduser() / filename
    if final.exists():
        return _already_there(final, checksum, name, wanted.repo, filename, meta.commit_hash)
    partial = final.with_name(f".{final.name}.{checksum[:16]}.incomplete")
    headers = build_hf_headers(token=token, library_name="parley")
    if _origin(meta.location) != _origin(url):
        headers.pop("authorization", None)  # a CDN's signed URL: the hub's token stays with the hub
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(final, keep=partial)
        f = open(partial, "ab")
    except OSError as e:
        raise InvalidRequest(f"cannot write in {final.parent}: {e.strerror or e}", param="dest_dir") from None
    with _closed(f):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # two pulls appending to one file would interleave
        except BlockingIOError:
            raise Conflict(f"another pull of {name} into {final.parent} is under way", param="spec") from None
        have = f.tell()
        if meta.size is not None and have > meta.size:  # longer than the file: not a prefix of it
            f.truncate(0)
            f.seek(0)
            have = 0
        _check_space(final.parent, (meta.size or 0) - have, name, have)
        try:
            http_get(meta.location, f, resume_size=have, headers=headers, expected_size=meta.size,
                     displayed_filename=final.name, tqdm_class=bar)
            f.flush()
        except (httpx2.TransportError, HfHubHTTPError) as e:
            raise ModelError(f"the download of {name} from {hub} stopped: {_why(e)}; pull again to continue "
                             f"from the {_size(f.tell())} kept in {partial}", code="hub_error") from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                on_disk = os.fstat(f.fileno()).st_size  # what is buffered is lost with the disk full
                raise _disk_full(final.parent, (meta.size or 0) - on_disk, name, on_disk) from None
            if e.errno is None:  # http_get's "Consistency check failed": the hub sent more or fewer bytes
                partial.unlink(missing_ok=True)
                raise ModelError(f"the hub sent a different number of bytes for {name} than it announced "
                                 f"({_size(meta.size or 0)}); the download was deleted: pull again",
                                 code="hub_error") from None
            raise InvalidRequest(f"cannot write {partial}: {e.strerror or e}", param="dest_dir") from None
        sha256 = _verify(partial, checksum, name)
        try:
            read_metadata(partial)
        except ModelError as e:
            partial.unlink(missing_ok=True)
            # read_metadata names the path it read; the user knows the file by its name on the hub
            raise ModelError(f"{e.message.replace(str(partial), name)}; the download was deleted") from None
        os.replace(partial, final)  # under the lock: no other pull appends to it as it takes its name
    return Pulled(final, wanted.repo, filename, meta.commit_hash, sha256, final.stat().st_size)


@contextmanager
def _closed(f: BinaryIO) -> Iterator[BinaryIO]:
    """`f`, closed after the block; when the block raises, a failing close does not hide why (a full disk fails
    the last flush too)."""
    try:
        yield f
    except BaseException:
        with suppress(OSError):
            f.close()
        raise
    f.close()


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub to talk to: `endpoint`, else $HF_ENDPOINT now (not at import), else huggingface.co."""
    value = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise InvalidRequest(f"HF_ENDPOINT {value!r} is not an http(s) URL: write e.g. {DEFAULT_ENDPOINT}",
                             param="HF_ENDPOINT")
    return value


@contextmanager
def _hub_errors(hub: str, wanted: PullSpec, token: str | bool | None) -> Iterator[None]:
    """huggingface_hub's and httpx's errors while asking the hub about a file, as one line a user can act on."""
    repo = wanted.repo
    try:
        yield
    except OfflineModeIsEnabled:
        raise ModelError(f"HF_HUB_OFFLINE is set, so parley does not ask the model hub at {hub}: unset it, or "
                         "download the file and `parley models add PATH`", param="HF_HUB_OFFLINE") from None
    except httpx2.TransportError as e:
        raise ModelError(f"cannot reach the model hub at {hub}: {_why(e)}; {_FIX}", param="HF_ENDPOINT",
                         code="hub_unreachable") from None
    except GatedRepoError:
        raise ModelError(f"{repo} is gated at {hub}: accept its conditions on its page there, then set HF_TOKEN "
                         "to a token of that account", param="HF_TOKEN", code="hub_unauthorized") from None
    except RepositoryNotFoundError as e:
        if _status(e) == 401:  # the hub says 401 both for a private repo and, without a token, a missing one
            raise ModelError(f"{hub} has no repo {repo} this client may read (401): check the name, or set "
                             "HF_TOKEN to a token that can read it", param="HF_TOKEN",
                             code="hub_unauthorized") from None
        raise NotFound(f"no model repo {repo} at {hub}: check OWNER/REPO", param="spec") from None
    except RevisionNotFoundError:
        raise NotFound(f"no revision {wanted.revision!r} in {repo} at {hub}", param="spec") from None
    except RemoteEntryNotFoundError:
        raise NotFound(f"no file {wanted.filename or wanted.quant} in {repo} at {wanted.revision} ({hub}); its "
                       f".gguf files: {_list_ggufs(hub, repo, wanted.revision, token)}", param="spec") from None
    except HfHubHTTPError as e:
        if _status(e) in (401, 403):
            raise ModelError(f"the model hub at {hub} refused {repo} ({_status(e)}): set HF_TOKEN to a token that "
                             "can read it", param="HF_TOKEN", code="hub_unauthorized") from None
        raise ModelError(f"the model hub at {hub} answered {_status(e)} for {repo}: try again later, or {_FIX}",
                         code="hub_error") from None


def _list_ggufs(hub: str, repo: str, revision: str, token: str | bool | None) -> str:
    """The repo's .gguf files for an error message; what went wrong asking is said in their place."""
    try:
        info = HfApi(endpoint=hub, token=token, library_name="parley").model_info(
            repo, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (httpx2.TransportError, HfHubHTTPError) as e:
        return f"(not listed: {_why(e)})"
    return ", ".join(sorted(s.rfilename for s in info.siblings or [] if s.rfilename.endswith(".gguf"))) or "none"


def _hashes(path: Path, checksum: str) -> tuple[str, str]:
    """(the file's sha256, the hash comparable with the hub's `checksum`): the same sha256 for an LFS file, the
    git blob sha1 (sha1 of "blob <size>\\0" + the bytes) for a file kept in git itself (a 40-digit ETag)."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {path.stat().st_size}\0".encode()) if _GIT_SHA1.fullmatch(checksum) else None
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return sha256.hexdigest(), (sha1 or sha256).hexdigest()


def _verify(path: Path, checksum: str, name: str) -> str:
    """The file's sha256, once it matches the hub's checksum; a mismatch deletes the file."""
    sha256, got = _hashes(path, checksum)
    if got != checksum:
        path.unlink(missing_ok=True)
        kind = "sha256" if got == sha256 else "git sha1"
        raise ModelError(f"{name} does not match the hub's checksum: its {kind} is {got}, the hub's {checksum}; "
                         "the download was deleted: pull again (a proxy or mirror may serve another file)",
                         code="checksum_mismatch")
    return sha256


def _already_there(final: Path, checksum: str, name: str, repo: str, filename: str, commit: str) -> Pulled:
    """The destination exists: the same file (by checksum) is a pull already done; another file is not replaced."""
    sha256, got = _hashes(final, checksum)
    if got != checksum:
        raise Conflict(f"{final} exists and is not {name} at {commit[:12]} (sha256 {sha256}): remove it, or pull "
                       "into another directory", param="dest_dir")
    return Pulled(final, repo, filename, commit, sha256, final.stat().st_size)


def _remove_abandoned(final: Path, keep: Path) -> None:
    """Partial downloads of another revision of this file can never be continued: remove those no pull holds."""
    for other in final.parent.glob(f".{glob.escape(final.name)}.*.incomplete"):
        if other == keep:
            continue
        with open(other, "ab") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another pull is writing it
            other.unlink()


def _check_space(directory: Path, needed: int, name: str, have: int) -> None:
    """Refuse before the first byte when the disk cannot hold the rest (huggingface_hub only warns)."""
    if needed > shutil.disk_usage(directory).free:
        raise _disk_full(directory, needed, name, have)


def _disk_full(directory: Path, needed: int, name: str, have: int) -> LimitExceeded:
    kept = f" (the {_size(have)} downloaded are kept; the pull continues from there)" if have else ""
    free = shutil.disk_usage(directory).free
    return LimitExceeded(f"not enough disk space in {directory} for {name}: {_size(free)} free, {_size(needed)} "
                         f"more needed; free some space and pull again{kept}", param="dest_dir")


def _bar_class(progress: Progress) -> type[tqdm] | None:
    """huggingface_hub's own tqdm bar (None) for True; else a silent bar that reports to the callable, if any."""
    if progress is True:
        return None
    if not (progress is False or callable(progress)):
        raise InvalidRequest(f"progress must be True, False or a callable, not {type(progress).__name__}",
                             param="progress")
    report = progress if callable(progress) else None

    class _Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done, self.size = kwargs.get("initial", 0), kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)  # n < 0 when a server ignored the Range and the file starts again
            if report is not None:
                report(self.done, self.size)
            return None

    return _Reporting


def _status(e: HfHubHTTPError) -> int | None:
    return e.response.status_code if e.response is not None else None


def _why(e: Exception) -> str:
    if isinstance(e, HfHubHTTPError):
        return f"the hub answered {_status(e)}"
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _size(n: int) -> str:
    for unit, scale in (("GB", 1024 * MB), ("MB", MB), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _safe_filename(filename: str, spec: str) -> str:
    """A repo path that stays under dest_dir (a listing is the hub's word, not parley's)."""
    parts = PurePosixPath(filename).parts
    if not parts or filename.startswith("/") or any(p in ("..", ".", "") for p in parts) or "\\" in filename:
        raise InvalidRequest(f"spec {spec!r}: {filename!r} is not a file path inside a repo", param="spec")
    return filename


__all__ = ["FORMS", "PullSpec", "Pulled", "hub_endpoint", "match_quant", "parse_spec", "pull"]
