"""The public endpoint's request and response, and fetching its inputs.

`controlnext-animate request=payload.json` runs a JSON body written for the endpoint
unchanged: `image_url` and `video_url` (required) plus any of its optional fields, under
the endpoint's names. Inputs may be local paths, `file://` URLs or `http(s)://` URLs;
remote ones are downloaded into a temporary folder the caller owns.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from controlnext_jax.endpoint import PARAMETERS
from controlnext_jax.errors import UserError

# The endpoint's optional fields (its names, which are also ours).
ENDPOINT_FIELDS = tuple(PARAMETERS)
REQUIRED = {"image_url": "image", "video_url": "video"}
DOWNLOAD_LIMIT = 2 << 30  # bytes; a larger input is refused rather than filling the disk
DOWNLOAD_TIMEOUT = 60  # seconds per connection attempt / read


def read_request(path: str | os.PathLike) -> dict:
    """The endpoint JSON body at `path` as our parameter names: {"image": ..., "video": ..., field: value}."""
    try:
        body = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"request={path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"request={path}: not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise UserError(f"request={path}: must be a JSON object (the endpoint's request body)")
    allowed = set(REQUIRED) | set(ENDPOINT_FIELDS)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise UserError(f"request={path}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = [k for k in REQUIRED if not body.get(k)]
    if missing:
        raise UserError(f"request={path}: missing required field {missing[0]!r}")
    params = {ours: body[theirs] for theirs, ours in REQUIRED.items()}
    params.update({k: body[k] for k in ENDPOINT_FIELDS if k in body})
    return params


def fetch_input(location: str, param: str, folder: Path) -> Path:
    """A local file for `location` (path, file:// or http(s):// URL); downloads go into `folder`."""
    parsed = urllib.parse.urlparse(str(location))
    if parsed.scheme in ("http", "https"):
        return _download(str(location), param, folder)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise UserError(f"{param}={location}: unsupported URL scheme {parsed.scheme!r}; "
                        "allowed: a path, file://, http://, https://")
    else:
        path = Path(location).expanduser()
    if not path.is_file():
        raise UserError(f"{param}={location}: file not found")
    return path


def _download(url: str, param: str, folder: Path) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name or param
    target = folder / f"{param}-{name}"
    request = urllib.request.Request(url, headers={"User-Agent": "controlnext-jax"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response, open(target, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0)
            if size > DOWNLOAD_LIMIT:
                raise UserError(f"{param}={url}: {size} bytes, over the {DOWNLOAD_LIMIT >> 20} MiB limit")
            copied = 0
            while block := response.read(1 << 20):
                copied += len(block)
                if copied > DOWNLOAD_LIMIT:
                    raise UserError(f"{param}={url}: over the {DOWNLOAD_LIMIT >> 20} MiB limit")
                out.write(block)
    except urllib.error.HTTPError as e:
        raise UserError(f"{param}={url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"{param}={url}: download failed ({reason})") from None
    if target.stat().st_size == 0:
        raise UserError(f"{param}={url}: the server sent an empty file")
    return target


def response_json(video: Path, file_size: int) -> dict:
    """The endpoint's response for the video at `video`: {"video": {url, content_type, file_name, file_size}}."""
    video = Path(video).absolute()
    return {"video": {"url": video.as_uri(), "content_type": "video/mp4", "file_name": video.name,
                      "file_size": file_size}}
