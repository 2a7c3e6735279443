"""Upload the demo catalog's granules to where the catalog links them: GEOMESH_CATALOG_DATA_URL.

    python upload.py DATA_DIR

Every file below DATA_DIR/granules/ goes to <GEOMESH_CATALOG_DATA_URL><its path below DATA_DIR>, as
the catalog resolves its relative links (catalog/models.py), with geomesh's own S3 settings
(GEOMESH_S3_*, else the standard AWS chain). The bucket is created when missing; objects already
there with the same size are kept, so a second run uploads nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from geomesh.s3 import S3Clients, S3Settings, split_s3_url


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    data_dir = Path(argv[1])
    bucket, prefix = split_s3_url(os.environ["GEOMESH_CATALOG_DATA_URL"])
    client = S3Clients(S3Settings()).bucket(bucket).client
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
        client.create_bucket(Bucket=bucket)
        print(f"created bucket {bucket}")
    sent = kept = 0
    for path in sorted((data_dir / "granules").rglob("*")):
        if not path.is_file():
            continue
        key = "/".join(part for part in (prefix, path.relative_to(data_dir).as_posix()) if part)
        try:
            if client.head_object(Bucket=bucket, Key=key)["ContentLength"] == path.stat().st_size:
                kept += 1
                continue
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise
        client.upload_file(str(path), bucket, key)
        sent += 1
    print(f"s3://{bucket}/{prefix}: {sent} granule files uploaded, {kept} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
