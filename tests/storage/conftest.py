"""Every blob-store test runs against each store: the local directory and an
S3 bucket on a real SeaweedFS server started for the session."""

from __future__ import annotations

import pytest

from ccsr.storage import LocalBlobStore
from s3_server import s3_server  # noqa: F401 - the session fixture


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """A fresh, empty store of each kind (an S3 store gets its own key prefix)."""
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_server").store()
