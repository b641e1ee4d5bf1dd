"""Downloading one file over HTTP: a backup URL, resumed partial files, a progress bar.

``download_file(url, destination, backup_url)`` is the book's helper of
section 5.5, made robust for files of several GB:

- the bytes go to ``destination + ".part"``, renamed to ``destination`` only
  once complete, so a file under its final name is never a cut-off one;
- a ``.part`` left by an interrupted download is resumed with an HTTP Range
  request; a server that ignores the range (200 instead of 206) or finds it
  past the end (416) gets the file sent whole, which replaces the part;
- when ``expected_size`` is known, a server announcing another size is not
  used, and a part already that long is taken as complete;
- if the primary URL fails in any way the backup URL is tried, resuming from
  what the first one delivered; if both fail, DownloadError says why for each.

The progress bar is tqdm's when tqdm is installed, else a plain line on
stderr. Only the standard library's urllib is used.
"""
import os
import re
import sys
import time

# urllib and http.client are imported where they are used: they would add a
# sixth to the time of every `import gptc`.

__all__ = ["download_file", "DownloadError"]

#: Seconds without any data before a connection is given up.
TIMEOUT = 60
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could be fetched from none of its URLs."""


class _Refused(Exception):
    """The server answered, but not with the file expected."""


def download_file(url, destination, backup_url=None, expected_size=None):
    """Download ``url`` to the path ``destination``, falling back to ``backup_url``.

    Returns ``destination``. Raises DownloadError (an OSError) naming the file,
    each URL and what went wrong with it when no URL delivers the file.
    """
    from http.client import HTTPException
    destination = os.fspath(destination)
    failures = []
    for candidate in [url] + ([backup_url] if backup_url else []):
        try:
            _fetch(candidate, destination, expected_size)
            return destination
        except (OSError, HTTPException, _Refused) as exc:
            failures.append(f"{candidate} ({_reason(exc)})")
    raise DownloadError(f"cannot download {os.path.basename(destination)}: "
                        + "; then ".join(failures))


def _reason(exc):
    import urllib.error
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return str(exc) or type(exc).__name__


def _fetch(url, destination, expected_size):
    import urllib.error
    import urllib.request
    part = destination + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if expected_size is not None and have > expected_size:
        have = 0                                  # longer than the file: start over
    if expected_size is not None and have == expected_size:
        os.replace(part, destination)
        return
    request = urllib.request.Request(url, headers={"User-Agent": "gptc",
                                                   **({"Range": f"bytes={have}-"} if have
                                                      else {})})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:              # the part is no prefix of this file
            os.remove(part)
            return _fetch(url, destination, expected_size)
        raise
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                raise _Refused(f"asked to resume at byte {have}, the server sent bytes from "
                               f"{start}")
            mode = "ab"
        elif response.status == 200:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"                  # no resuming here: replace the part
        else:
            raise _Refused(f"HTTP {response.status}")
        if expected_size is not None and total is not None and total != expected_size:
            raise _Refused(f"the server's file has {total} bytes, {expected_size} expected")
        total = expected_size if total is None else total
        with open(part, mode) as out, _Progress(os.path.basename(destination), total,
                                                have) as advance:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                have += len(chunk)
                advance(len(chunk))
    if total is not None and have != total:
        raise _Refused(f"the connection ended after {have} of {total} bytes ({part} is kept "
                       "and resumed next time)")
    os.replace(part, destination)


def _content_range(header):
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", header.strip())
    if match is None:
        raise _Refused(f"a partial answer with an unreadable Content-Range {header!r}")
    total = match.group(3)
    return int(match.group(1)), (int(total) if total != "*" else None)


class _Progress:
    """A context giving ``advance(n_bytes)``: tqdm's bar, or a plain line on stderr."""

    def __init__(self, name, total, initial):
        self.name, self.total, self.done = name, total, initial
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.bar = None if tqdm is None else tqdm(
            total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name, file=sys.stderr)
        self.terminal = sys.stderr.isatty()
        self.shown = 0.0

    def __enter__(self):
        if self.bar is None:
            self._line(force=True)
        return self.advance

    def advance(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            self._line()

    def _line(self, force=False, end=""):
        now = time.monotonic()
        if not (force or (self.terminal and now - self.shown >= 0.2)):
            return
        self.shown = now
        done = f"{self.done / 2 ** 20:.1f}"
        of = (f" of {self.total / 2 ** 20:.1f} MiB ({100 * self.done / self.total:.0f}%)"
              if self.total else " MiB")
        lead = "\r" if self.terminal else ""
        print(f"{lead}{self.name}: {done}{of}", end=end if self.terminal else "\n",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(force=True, end="\n")
        return False
