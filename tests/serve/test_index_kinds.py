"""A package whose index is a compressed kind (retrieval.index: hnsw_sq8, ivfpq) serves like the default
one: it loads, its smoke queries answer as recorded, items can be added live; re-exporting it, which needs
the exact vectors its index no longer keeps, is refused by name."""

from pathlib import Path

import pytest

from simrec.recommender.package import PackageError, Recommender

KINDS = ("hnsw_sq8", "ivfpq")


@pytest.fixture(scope="module")
def kind_packages(tmp_path_factory) -> dict[str, Path]:
    from packages import build_in_steps_env

    root = tmp_path_factory.mktemp("kinds")
    folders = build_in_steps_env(*((root / kind, 300, 0, kind) for kind in KINDS))
    return dict(zip(KINDS, folders, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_a_compressed_index_package_serves(kind, kind_packages) -> None:
    from packages import catalogue_items

    recommender = Recommender(kind_packages[kind])
    assert recommender.manifest["index"]["kind"] == kind
    assert recommender.check_smoke_queries() == []
    (answer,) = recommender.similar_to_items(["item-00003"], 5)
    assert len(answer) == 5 and "item-00003" not in [n.item_id for n in answer]
    new = catalogue_items(4, seed=7, prefix="new")
    grown = recommender.with_items(new)
    assert (recommender.index.ntotal, grown.index.ntotal) == (300, 304)
    (answer,) = grown.similar_to_pixels(new["pixels"].iloc[0][None], 1)
    assert answer[0].item_id == "new-00000"


@pytest.mark.parametrize("kind", KINDS)
def test_re_exporting_a_compressed_index_package_is_refused(kind, kind_packages) -> None:
    from simrec.recommender.reexport import reexport_package

    with pytest.raises(PackageError, match=f"a '{kind}' index keeps compressed codes"):
        reexport_package(kind_packages[kind])
