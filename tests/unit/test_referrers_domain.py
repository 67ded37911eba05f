"""OCI 1.1 referrers in the domain: a manifest's subject and artifact type, the referrers list, its
fallback tag, filtering and paging; and CachedManifest events stored before subjects were recorded."""

from __future__ import annotations

import json

import pytest
from eventsourcing.persistence import StoredEvent

from application.cache_records import CacheRecords
from domain.cache import CachedManifest
from domain.manifest import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, InvalidManifest, read_manifest
from domain.referrers import (Descriptor, Referrer, fallback_tag, merged, of_artifact_type, page,
                              read_referrers_index, referrer_of, referrers_index)

SUBJECT = "sha256:" + "a" * 64
EMPTY = {"mediaType": OCI_EMPTY, "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
         "size": 2}


def artifact(**fields) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY, "layers": [EMPTY],
                       "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 500}, **fields}).encode()


def test_an_artifact_manifest_names_its_subject_artifact_type_and_annotations():
    content = read_manifest(artifact(artifactType="application/vnd.dev.cosign.simplesigning.v1+json",
                                     annotations={"org.opencontainers.image.created": "2026-11-30"}))
    assert referrer_of(content) == Referrer(SUBJECT, "application/vnd.dev.cosign.simplesigning.v1+json",
                                            {"org.opencontainers.image.created": "2026-11-30"})
    assert content.blobs == [EMPTY["digest"], EMPTY["digest"]]


def test_without_an_artifact_type_an_image_manifest_shows_its_config_media_type():
    document = json.loads(artifact())
    document["config"] = {**EMPTY, "mediaType": "application/vnd.example.sbom.v1"}
    assert read_manifest(json.dumps(document).encode()).artifact_type == "application/vnd.example.sbom.v1"


def test_an_index_with_a_subject_and_no_artifact_type_has_none():
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
             "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 5}}
    content = read_manifest(json.dumps(index).encode())
    assert (content.subject, content.artifact_type) == (SUBJECT, "")


def test_an_ordinary_manifest_refers_to_nothing():
    document = json.loads(artifact())
    del document["subject"]
    assert referrer_of(read_manifest(json.dumps(document).encode())) is None


@pytest.mark.parametrize("subject", ["sha256:x", {"digest": "nope"}, {"size": 1}])
def test_a_malformed_subject_is_an_invalid_manifest(subject):
    with pytest.raises(InvalidManifest):
        read_manifest(artifact(subject=subject))


def test_the_fallback_tag_follows_the_referrers_tag_schema():
    assert fallback_tag(SUBJECT) == "sha256-" + "a" * 64
    assert fallback_tag("sha512:" + "b" * 128) == "sha512-" + "b" * 64
    weird = ("test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+overall+truncation:"
             "alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLotsOfCharactersToExcerciseEncodedTruncation")
    assert fallback_tag(weird) == ("test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphen"
                                   "ReplacementAndLotsAndLot")


def test_a_referrers_list_round_trips_and_omits_what_is_empty():
    sig = Descriptor(OCI_MANIFEST, "sha256:" + "1" * 64, 400, "application/vnd.example.signature.v1", {"k": "v"})
    idx = Descriptor(OCI_INDEX, "sha256:" + "2" * 64, 300)
    body = referrers_index([sig, idx])
    assert json.loads(body)["manifests"][1] == {"mediaType": OCI_INDEX, "digest": idx.digest, "size": 300}
    assert json.loads(body)["mediaType"] == OCI_INDEX
    assert read_referrers_index(body) == [sig, idx]


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"manifests": 1}', b'{"manifests": [{"digest": "x"}]}',
                                  b'{"manifests": [{"digest": "sha256:' + b"1" * 64 + b'", "mediaType": "m", '
                                  b'"size": -1}]}', b"not json"])
def test_an_upstream_answer_that_is_not_a_referrers_list_is_refused(body):
    with pytest.raises(InvalidManifest):
        read_referrers_index(body)


def test_merging_keeps_each_digest_once_filtering_and_paging_follow_list_order():
    a, b, c = (Descriptor(OCI_MANIFEST, f"sha256:{ch * 64}", 1, t) for ch, t in (("1", "x"), ("2", "y"), ("3", "x")))
    assert merged([a, b], [b, c]) == [a, b, c]
    assert of_artifact_type([a, b, c], "x") == [a, c]
    assert page([a, b, c], 2, None) == ([a, b], True)
    assert page([a, b, c], 2, b.digest) == ([c], False)
    assert page([a, b, c], 2, "sha256:" + "9" * 64) == ([], False)


def test_a_cached_manifest_stored_before_subjects_loads_with_none():
    records = CacheRecords(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    manifest = CachedManifest(org="hub", repository="a", digest=SUBJECT, media_type=OCI_MANIFEST, size=5,
                              blobs=[], children=[], cached_at=1.0, subject="", artifact_type="", annotations={})
    stored = records.mapper.to_stored_event(manifest.collect_events()[0])
    state = records.mapper.transcoder.decode(stored.state)
    for name in ("subject", "artifact_type", "annotations", "class_version"):
        state.pop(name, None)
    records.recorder.insert_events([StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                                                records.mapper.transcoder.encode(state))])
    event = records.mapper.to_domain_event(records.recorder.select_notifications(start=None, limit=10)[0])
    assert (event.subject, event.artifact_type, event.annotations) == ("", "", {})
    assert records.repository.get(manifest.id).subject == ""


def test_a_referrers_list_records_a_change_whole_and_an_unchanged_answer_as_a_revalidation():
    from domain.referrers_list import ReferrersList
    first = [{"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 3}]
    listing = ReferrersList(org="hub", repository="a", subject=SUBJECT, descriptors=first, checked_at=1.0)
    listing.observe(list(first), 2.0, shown=True)
    listing.observe(list(first), 2.0, shown=True)               # not newer: nothing
    listing.observe(list(first), 3.0, shown=False)               # the views lost it (a flush): whole again
    listing.observe([], 4.0, shown=True)
    kinds = [type(e).__name__ for e in listing.collect_events()]
    assert kinds == ["Listed", "Revalidated", "Changed", "Changed"]
    assert (listing.descriptors, listing.checked_at) == ([], 4.0)


def test_recached_carries_the_subject_and_a_version_1_recached_loads_without_one():
    records = CacheRecords(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    manifest = CachedManifest(org="hub", repository="a", digest="sha256:" + "b" * 64, media_type=OCI_MANIFEST,
                              size=5, blobs=[], children=[], cached_at=1.0, subject=SUBJECT,
                              artifact_type="application/x.sig", annotations={"k": "v"})
    manifest.evict(manifest.digest, [], 5, "quota", "lru", "system:evictor", 2.0)
    manifest.recache(OCI_MANIFEST, 5, [], [], 3.0)
    recached = manifest.collect_events()[-1]
    assert (recached.subject, recached.artifact_type, recached.annotations) == (SUBJECT, "application/x.sig",
                                                                                 {"k": "v"})
    stored = records.mapper.to_stored_event(recached)
    state = records.mapper.transcoder.decode(stored.state)
    for name in ("subject", "artifact_type", "annotations", "class_version"):
        state.pop(name, None)
    event = records.mapper.to_domain_event(StoredEvent(stored.originator_id, stored.originator_version,
                                                       stored.topic, records.mapper.transcoder.encode(state)))
    assert (event.subject, event.artifact_type, event.annotations) == ("", "", {})
