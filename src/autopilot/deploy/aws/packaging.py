"""The model package: a deterministic tar.gz of the model files, uploaded once and verified byte for byte."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from autopilot.adapters.registry import sha256_manifest
from autopilot.adapters.registry.model_loading import PACKAGE_MANIFEST, PACKAGE_SIGNATURE
from autopilot.deploy.aws.errors import ProvisionError, UploadMismatch, error_code
from autopilot.faults import checkpoint

if TYPE_CHECKING:
    from autopilot.config import AwsDeploymentConfig

__all__ = ["MANIFEST_NAME", "SIGNATURE_NAME", "package_model", "upload_package"]

log = logging.getLogger(__name__)

MANIFEST_NAME = PACKAGE_MANIFEST  # the manifest of a package (one name: model_loading reads it)
SIGNATURE_NAME = PACKAGE_SIGNATURE  # its HMAC, when registration signed the manifest
_CHUNK = 1 << 20


class _HashingReader:
    """A file wrapper hashing what tarfile reads, so the archive holds what was verified."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    # Everything that varies between machines or runs is pinned: time, owner, group.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def package_model(model_dir: Path, out_path: Path, signature: str | None = None) -> tuple[Path, str]:
    """Pack an MLflow model directory into a deterministic tar.gz for SageMaker.

    Files sit at the archive root (SageMaker extracts it into /opt/ml/model), in sorted order,
    with mtime 0, uid/gid 0 and no owner names, and the gzip header carries no name or time, so
    the same files always give the same bytes. `autopilot-manifest.json` inside holds the
    SHA-256 of every other file (`registry.sha256_manifest`); check an unpacked package with
    `verify_manifest(folder, manifest, ignore=(MANIFEST_NAME,))`. With `signature` (the version's
    manifest signature), `autopilot-manifest.sig` holds it, and a container given the signing key
    refuses the package without it (`model_loading.open_package`).

    Returns:
        The archive's path and the SHA-256 hex digest of its bytes.

    Raises:
        FileNotFoundError: `model_dir` is not a directory.
        ValueError: the directory already holds a file named like the manifest, or a file
            changed while it was being packed.
    """
    model_dir = Path(model_dir)
    out_path = Path(out_path)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    manifest = sha256_manifest(model_dir)
    if MANIFEST_NAME in manifest or SIGNATURE_NAME in manifest:
        raise ValueError(f"{model_dir} already contains {MANIFEST_NAME} or {SIGNATURE_NAME}; they are reserved "
                         "for the package manifest")
    generated = {MANIFEST_NAME: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}
    if signature:
        generated[SIGNATURE_NAME] = (signature + "\n").encode()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed, so a crash never leaves a truncated package.
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=".tmp-", suffix=".tar.gz")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in sorted([*manifest, *generated]):
                if name in generated:
                    tar.addfile(_tarinfo(name, len(generated[name]), 0o644), io.BytesIO(generated[name]))
                    continue
                path = model_dir / name
                # Owner-executable files stay executable; every other permission bit is pinned.
                mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                with path.open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    reader = _HashingReader(handle)
                    tar.addfile(_tarinfo(name, size, mode), reader)
                if reader.digest.hexdigest() != manifest[name]:
                    raise ValueError(f"{name} changed while {model_dir} was being packaged")
        digest = _file_sha256(Path(tmp_name))
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info("packaged %s into %s (%d files, sha256 %s)", model_dir, out_path, len(manifest), digest)
    return out_path, digest


# --------------------------------------------------------------------------- upload


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        head: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return head


_PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_MIB = 1 << 20


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _stored_sha256(s3: Any, bucket: str, key: str) -> tuple[str, str]:
    """The SHA-256 of the object's bytes, read back in chunks, and the digest its metadata claims."""
    answer = s3.get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    body = answer["Body"]
    try:
        for chunk in body.iter_chunks(_CHUNK):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest(), str(answer.get("Metadata", {}).get("sha256", "")).lower()


def _existing_package(s3: Any, bucket: str, key: str, head: dict[str, Any], sha256_hex: str) -> str:
    """Accept a package already under the key only if it is this one, byte for byte."""
    url = f"s3://{bucket}/{key}"
    stored = str(head.get("Metadata", {}).get("sha256", "")).lower()
    if stored != sha256_hex:
        raise ProvisionError(
            f"{url} already holds a different package (sha256 {stored or 'unknown'}, this one {sha256_hex}); "
            "a published package is never overwritten: use a new key"
        )
    actual, _ = _stored_sha256(s3, bucket, key)
    if actual != sha256_hex:
        # Not deleted here: an endpoint config may already point at it. An operator must look.
        raise ProvisionError(f"{url} claims sha256 {sha256_hex} but its bytes hash to {actual}: the stored package "
                             "is corrupt; delete it (nothing may serve it) and run the deploy again")
    log.info("package %s already uploaded with sha256 %s (verified); skipped", url, sha256_hex)
    return url


def _abort_stale_uploads(s3: Any, bucket: str, key: str) -> None:
    """Abort unfinished multipart uploads of `key` (a killed earlier attempt leaves its parts behind)."""
    try:
        answer = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    except ClientError as exc:
        if error_code(exc) != "AccessDenied":
            raise
        # A policy without s3:ListBucketMultipartUploads: the bucket's lifecycle rule
        # (AbortIncompleteMultipartUpload) is then what removes them; say so and go on.
        log.warning("cannot list unfinished multipart uploads of s3://%s/%s (AccessDenied); leaving them to "
                    "the bucket's AbortIncompleteMultipartUpload lifecycle rule", bucket, key)
        return
    for upload in answer.get("Uploads", []):
        if upload.get("Key") != key:
            continue
        log.warning("aborting an unfinished multipart upload of s3://%s/%s started %s (an earlier attempt "
                    "died mid-upload)", bucket, key, upload.get("Initiated"))
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def _put_single(s3: Any, bucket: str, key: str, path: Path, sha256_hex: str) -> None:
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    with path.open("rb") as body:
        # One PUT: readers see the whole object or nothing; S3 checks ChecksumSHA256 on arrival.
        s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumSHA256=checksum, Metadata={"sha256": sha256_hex},
                      ContentType="application/gzip", IfNoneMatch="*")


def _put_multipart(s3: Any, bucket: str, key: str, path: Path, sha256_hex: str, part_size: int) -> None:
    """Upload in parts, each SHA-256 checked by S3; any failure aborts the upload (no parts left)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256",
                                           Metadata={"sha256": sha256_hex}, ContentType="application/gzip")["UploadId"]
    try:
        parts: list[dict[str, Any]] = []
        with path.open("rb") as handle:
            while chunk := handle.read(part_size):
                number = len(parts) + 1
                checksum = _b64_sha256(chunk)
                answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                                        ChecksumSHA256=checksum)
                parts.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum})
                checkpoint("deploy.upload.part_uploaded")
        # Conditional like the single PUT: a concurrent writer's object is never replaced.
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                                     IfNoneMatch="*")
    except BaseException as exc:  # including a task timeout or SIGTERM: never leave parts behind
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            log.warning("aborted the multipart upload of s3://%s/%s: %s", bucket, key, exc)
        except Exception as abort_error:  # the original error matters more; the next attempt aborts it
            log.error("could not abort the multipart upload of s3://%s/%s (%s); the next deploy aborts it",
                      bucket, key, abort_error)
        raise


def _verify_upload(s3: Any, bucket: str, key: str, sha256_hex: str) -> None:
    """Read the new object back; if it is not what was sent, delete it (nothing points at it yet)."""
    actual, claimed = _stored_sha256(s3, bucket, key)
    if actual == sha256_hex and claimed == sha256_hex:
        return
    s3.delete_object(Bucket=bucket, Key=key)
    raise UploadMismatch(f"s3://{bucket}/{key} did not hold what was uploaded (its bytes hash to {actual}, "
                         f"metadata sha256 {claimed or 'missing'}, expected {sha256_hex}): deleted it; "
                         "run the deploy again")


def upload_package(s3: Any, bucket: str, key: str, path: Path, sha256_hex: str, *,
                   limits: AwsDeploymentConfig | None = None) -> str:
    """Upload a package once, and verify what S3 stored before anything may point at it.

    Packages up to `limits.multipart_threshold_mib` go in one PUT carrying `ChecksumSHA256`;
    larger ones as a multipart upload with a SHA-256 checksum per part, aborted on any failure
    (an earlier attempt killed mid-upload is aborted first). Both writes are conditional
    (`If-None-Match: *`), so two concurrent uploads cannot overwrite each other, and both carry
    the hex digest in the object's `sha256` metadata. Afterwards the object is read back and
    hashed: one that differs (an S3-compatible store that ignores checksums, a proxy that
    altered it, a writer that replaced it) is deleted and the upload fails. An object already
    under the key is accepted only with the same digest, in its metadata and in its bytes.

    Returns:
        The package's s3:// URL.

    Raises:
        ProvisionError: the file does not match `sha256_hex`, the key holds another package or
            a corrupt one, or the stored object did not match (it has been deleted).
    """
    from autopilot.config import AwsDeploymentConfig

    limits = limits or AwsDeploymentConfig()
    path = Path(path)
    sha256_hex = sha256_hex.lower()
    url = f"s3://{bucket}/{key}"
    actual = _file_sha256(path)
    if actual != sha256_hex:
        raise ProvisionError(f"{path} has sha256 {actual}, not the expected {sha256_hex}")
    head = _head(s3, bucket, key)
    if head is not None:
        return _existing_package(s3, bucket, key, head, sha256_hex)
    _abort_stale_uploads(s3, bucket, key)
    size = path.stat().st_size
    try:
        if size > limits.multipart_threshold_mib * _MIB:
            _put_multipart(s3, bucket, key, path, sha256_hex, limits.multipart_part_mib * _MIB)
        else:
            _put_single(s3, bucket, key, path, sha256_hex)
    except ClientError as exc:
        if error_code(exc) not in _PRECONDITION_FAILED:
            raise
        # Another writer stored the key between our HEAD and our write: accept it only if identical.
        head = _head(s3, bucket, key)
        if head is None:
            raise
        return _existing_package(s3, bucket, key, head, sha256_hex)
    checkpoint("deploy.upload.stored")
    _verify_upload(s3, bucket, key, sha256_hex)
    log.info("uploaded package %s (%d bytes, sha256 %s, verified)", url, size, sha256_hex)
    return url
