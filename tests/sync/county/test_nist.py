"""ANSI/NIST-ITL export of booking records built from real photos: the builder, the validator and the
read-back through ``nistitl`` (the codec the county side uses)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import nistitl
import pytest

from sync.county.gallery import nist
from sync.county.gallery.nist import NistConfig, NistConfigError, NistExportError, NistRecord
from sync.protocol import wire
from sync.protocol.jpeg import jpeg_dimensions, jpeg_info
from tests.conftest import shared_data_dir
from tests.sync import factory

FACES = shared_data_dir() / "faces"
MUGSHOT = "openmpf_meds/meds-aa-S001-01.jpg"  # NIST MEDS mug shot: 480x600 baseline JFIF (SAP 30 geometry)
SMALL_MUGSHOT = "openmpf_meds/meds-aa-S029-01.jpg"  # 384x480: 4:5 but under SAP 30's 480x600
PORTRAIT_3X4 = "deepface/img29.jpg"  # 600x800 baseline JFIF
LARGE_3X4 = "deepface/img3.jpg"  # 1536x2048 baseline JFIF (SAP 40 geometry)
PROGRESSIVE = "deepface/img12.jpg"  # progressive JPEG
NO_JFIF = "deepface/img28.jpg"  # baseline JPEG without an APP0 JFIF marker
SMT_PHOTO = "deepface/img10.jpg"  # 408x594


def photo(name: str) -> bytes:
    """A real photo from ../shared/data/faces (read in place, never copied into the repo)."""
    path = FACES / name
    if not path.exists():
        pytest.fail(f"{path} is missing: the export tests need the shared real images (see tests/conftest.py)")
    return path.read_bytes()


def capture(pose: str, name: str, **kwargs: Any) -> wire.WireCapture:
    data = photo(name)
    dims = jpeg_dimensions(data)
    assert dims is not None
    return wire.WireCapture.build(pose, data, dims[0], dims[1], **kwargs)


def frontal_quality(*, sap: int | None = 30, passed: bool = True, uqs: float | None = 81.4, **gates: bool) -> dict:
    """The quality JSON the appliance stores for a standardized frontal capture."""
    measures: dict[str, Any] = {"unified_quality_score": {"raw": uqs, "score": uqs}}
    for name in ("eyes_open", "mouth_closed", "expression_neutrality"):
        measures[name] = {"raw": 0.5, "score": 90.0, "passed": gates.get(name, True)}
    profile = f"nist-sap{sap}" if sap else "custom"
    return {
        "pose": "frontal",
        "gated": True,
        "profile": profile,
        "source_size": [1280, 960],
        "report": {"profile": profile, "sap": sap, "passed": passed, "faces": 1, "measures": measures},
        "standardized": {"width": 480, "height": 600, "ied": 96.0},
        "template": {"model": "dlib-resnet-v1@1", "dim": 128},
    }


def profile_quality(pose: str) -> dict:
    return {"pose": pose, "gated": False, "report": {"profile": "nist-sap30", "sap": 30, "passed": False}}


def real_record(**changes: Any) -> wire.WireRecord:
    """Frontal (4:5 mug shot), left profile (3:4 photo), right profile (4:5) and a tattoo photo."""
    captures = (
        capture("frontal", MUGSHOT, quality=frontal_quality(), template=factory.template()),
        capture("left_profile", PORTRAIT_3X4, quality=profile_quality("left_profile")),
        capture("right_profile", MUGSHOT, quality=profile_quality("right_profile")),
        capture("smt", SMT_PHOTO, quality={"pose": "smt", "gated": False}, description="tattoo, left forearm, eagle"),
    )
    return factory.record(**{"captures": captures, **changes})


def with_frontal(rec: wire.WireRecord, **changes: Any) -> wire.WireRecord:
    return dataclasses.replace(rec, captures=(dataclasses.replace(rec.captures[0], **changes), *rec.captures[1:]))


def swap_frontal(rec: wire.WireRecord, name: str, **changes: Any) -> wire.WireRecord:
    old = rec.captures[0]
    new = capture("frontal", name, quality=old.quality, template=old.template)
    return dataclasses.replace(rec, captures=(dataclasses.replace(new, **changes), *rec.captures[1:]))


def revalidate(records: list[NistRecord], config: NistConfig | None = None) -> list[nist.NistIssue]:
    """Encode (possibly broken) records with nistitl and validate what reads back."""
    return nist.validate_transaction(nist.encode_records(records), config=config or NistConfig())


def fields_of(issues: list[nist.NistIssue]) -> list[str]:
    return [i.field for i in issues]


# ------------------------------------------------------------------------------------ good export
def test_real_record_exports_to_a_file_nistitl_reads_back(tmp_path: Path) -> None:
    rec = real_record()
    wire.encode_record(rec, factory.key(1))  # the record is one a station could really send
    data = nist.export_record(rec)
    path = tmp_path / f"{rec.record_id}.eft"
    path.write_bytes(data)

    msg = nistitl.Message()
    msg.parse(path.read_bytes())
    assert [r.type for r in msg] == [1, 2, 10, 10, 10, 10]
    t1 = msg[0]
    assert t1._3 == [["1", "5"], ["2", "0"], ["10", "1"], ["10", "2"], ["10", "3"], ["10", "4"]]
    assert (t1._2, t1._4, t1._5, t1._7, t1._8, t1._9) == (
        "0500",
        "MUG",
        "20260301",
        "WA0170000",
        "WA0170000",
        rec.record_id,
    )
    assert (t1._11, t1._12, t1._14) == ("00.00", "00.00", "20260301143007Z")
    t2 = msg[(2, 0)]
    assert (t2._701, t2._702, t2._703, t2._704, t2._705, t2._706) == (
        "2026-000123",
        "WA0170000",
        "ofc-1187",
        "20260301143005Z",
        "st-01",
        rec.record_id,
    )

    type10 = list(msg.iter(10))
    assert [
        (r.IDC, r._3, r[20].value if r[20] is not None else None, r[13].value if r[13] is not None else None)
        for r in type10
    ] == [
        (1, "FACE", "F", "30"),
        (2, "FACE", "L", "20"),  # a 3:4 profile cannot claim SAP 30 (4:5): exported as 20, COM says why
        (3, "FACE", "R", "30"),
        (4, "TATTOO", None, None),
    ]
    for r, cap in zip(type10, rec.captures, strict=True):
        assert r._999 == cap.jpeg  # the station's JPEG, byte for byte
        assert (r._6, r._7) == (str(cap.width), str(cap.height))
        assert (r._4, r._5, r._8, r._9, r._10, r._11, r._12) == ("WA0170000", "20260301", "0", "1", "1", "JPEGB", "YCC")
    front, left, _right, smt = type10
    assert front._24 == [["81", "0000", "1"]]  # SQS: unified quality score, vendor, product
    assert front._26 == "NEUTRAL"
    assert front[902].value[0][0] == "20260301143005Z"
    assert "4:5" in left._38 and left[24] is None  # no frontal quality score on a profile
    assert smt._42 == [["TATTOO", "OTHER", "MISC", "tattoo, left forearm, eagle"]]
    assert nist.validate_transaction(data, config=NistConfig()) == []


def test_export_is_deterministic_and_validates_against_what_was_built() -> None:
    rec = real_record()
    records = nist.build_records(rec)
    data = nist.export_record(rec)
    assert data == nist.export_record(rec) == nist.encode_records(records)
    assert nist.validate_transaction(data, expected=records) == []
    changed = [dataclasses.replace(r, fields=dict(r.fields)) for r in records]
    changed[2].fields[4] = "WA0170001"
    issues = nist.validate_transaction(data, expected=changed)
    assert issues == [nist.NistIssue(10, "10.004", "IDC 1: 'WA0170001' read back as 'WA0170000'")]


def test_header_settings_version_and_time_zone() -> None:
    late = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.timezone.utc)  # still 28 Feb in Los Angeles
    rec = real_record(
        booking=wire.WireBooking("WA0170000", "2026-000123", "ofc-1187", late), created_at=late + dt.timedelta(1)
    )
    config = NistConfig(
        version="0502",
        tot="BKG",
        dai="WA017015G",
        src="WA017013C",
        domain_name="NORAM",
        domain_version="11.0",
        timezone="America/Los_Angeles",
        quality_vendor="00A1",
        quality_product=7,
    )
    records = nist.decode_transaction(nist.export_record(rec, config))
    t1 = records[0].fields
    assert (t1[2], t1[4], t1[5], t1[7], t1[8], t1[13], t1[14]) == (
        "0502",
        "BKG",
        "20260301",
        "WA017015G",
        "WA0170000",
        (("NORAM", "11.0"),),
        "20260302030000Z",
    )
    face = records[2].fields
    assert (face[4], face[5], face[24], face[992]) == ("WA017013C", "20260228", (("81", "00A1", "7"),), "0")
    del records[3].fields[992]
    assert fields_of(revalidate(records)) == ["10.992 T2C"]  # mandatory from VER 0501 on


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"version": "0300"}, "version"),
        ({"tot": "car!"}, "tot"),
        ({"dai": "WA01"}, "dai"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"nsr": "19.7"}, "nsr"),
        ({"quality_vendor": "xyz"}, "quality_vendor"),
        ({"fallback_sap": 30}, "fallback_sap"),
        ({"type2_fields": {"booking_number": 2}}, "type2_fields"),
        ({"quality_product": "7"}, "wrong type for quality_product"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(NistConfigError, match=problem):
        NistConfig(**changes)


# -------------------------------------------------------------------------------- SAP and content
def test_sap_falls_back_when_the_frontal_failed_or_was_overridden() -> None:
    failed = with_frontal(real_record(), quality=frontal_quality(passed=False, eyes_open=False))
    face = nist.decode_transaction(nist.export_record(failed))[2].fields
    assert face[13] == "20" and "did not record its SAP 30 quality gates as passed" in face[38]
    assert face[26] == "BLINK"

    kept = with_frontal(real_record(), override_reason="subject would not look at the camera")
    records = nist.decode_transaction(nist.export_record(kept))
    face, right = records[2].fields, records[4].fields
    assert face[13] == "20"
    assert (right[20], right[13], right[38]) == ("R", "20", "SAP 20: the frontal view does not meet SAP 30")
    assert face[38].startswith("kept by officer override: subject would not look at the camera")
    assert len(face[38]) <= 126


def test_sap_falls_back_when_the_image_misses_the_level_geometry() -> None:
    small = swap_frontal(real_record(), SMALL_MUGSHOT)
    face = nist.decode_transaction(nist.export_record(small))[2].fields
    assert face[13] == "20" and "needs at least 480x600 pixels; this image is 384x480" in face[38]


def test_sap_40_frontal_claims_40_with_its_mandatory_sxs() -> None:
    rec = swap_frontal(real_record(), LARGE_3X4)
    rec = with_frontal(rec, quality={**frontal_quality(sap=40), "report": {"sap": 40, "passed": True}})
    face = nist.decode_transaction(nist.export_record(rec))[2].fields
    assert (face[6], face[7], face[13], face[26]) == ("1536", "2048", "40", "UNKNOWN")
    assert face[24] == (("254", "0000", "1"),)  # the report carries no unified score: 254 "not computed"


def test_quality_score_255_when_the_station_could_not_assess_it() -> None:
    rec = with_frontal(real_record(), quality=frontal_quality(uqs=None))
    assert nist.decode_transaction(nist.export_record(rec))[2].fields[24] == (("255", "0000", "1"),)


@pytest.mark.parametrize(
    ("description", "imt"),
    [
        ("tattoo, left forearm, eagle", "TATTOO"),
        ("Tattooed letters on knuckles", "TATTOO"),
        ("scar above right eyebrow", "SCAR"),
        ("old scar under a tattoo", "SCAR"),
        ("mole on the left cheek", "MARK"),
        ("needle marks, inner arm", "MARK"),
    ],
)
def test_smt_image_type_comes_from_the_description(description: str, imt: str) -> None:
    assert nist.smt_image_type(description) == imt


def test_non_ascii_text_is_declared_utf8_and_reads_back() -> None:
    rec = real_record()
    desc = "Tätowierung: tattoo 'José' 999: nombre"
    rec = dataclasses.replace(rec, captures=(*rec.captures[:3], dataclasses.replace(rec.captures[3], description=desc)))
    data = nist.export_record(rec)
    records = nist.decode_transaction(data)
    assert records[0].fields[15] == (("003", "UTF-8"),)
    assert records[5].fields[42] == (("TATTOO", "OTHER", "MISC", "Tätowierung: tattoo 'José' 999 : nombre"),)
    assert "Tätowierung".encode() in data
    del records[0].fields[15]
    messages = [i.message for i in nist.validate_records(records)]
    assert "IDC 4: text outside 7-bit ASCII needs 1.015 DCS naming its character set" in messages


# -------------------------------------------------------------------------------- validator rules
def test_missing_mandatory_fields_are_named() -> None:
    records = nist.build_records(real_record())
    del records[0].fields[9]
    del records[2].fields[4]
    del records[2].fields[13]
    del records[1].fields[701]
    issues = revalidate(records)
    assert nist.NistIssue(1, "1.009 TCN", "mandatory field is missing") in issues
    assert nist.NistIssue(10, "10.004 SRC", "IDC 1: mandatory field is missing") in issues
    assert nist.NistIssue(10, "10.013 SAP", "IDC 1: mandatory field is missing (IMT is FACE)") in issues
    assert nist.NistIssue(2, "2.701 BKN", "IDC 0: mandatory field is missing (this county's Type-2 layout)") in issues


def test_cnt_that_disagrees_with_the_records_is_caught() -> None:
    data = nist.export_record(real_record())
    broken = data.replace(b"\x1e10\x1f2\x1e", b"\x1e10\x1f7\x1e", 1)  # same length: LEN stays right
    assert broken != data
    issues = nist.validate_transaction(broken)
    assert [str(i) for i in issues] == ["Type-1 1.003 CNT: CNT entry 4 says Type-10 IDC 7; record 4 is Type-10 IDC 2"]


def test_duplicate_and_out_of_range_idc_are_caught() -> None:
    records = nist.build_records(real_record())
    records[3].fields[2] = "1"
    records[4].fields[2] = "120"
    issues = revalidate(records)
    assert nist.NistIssue(10, "10.002 IDC", "IDC 1: another Type-10 record already uses IDC 1") in issues
    assert nist.NistIssue(10, "10.002 IDC", "IDC 120: IDC '120' must be an integer 0..99") in issues


def _frontal_image(records: list[NistRecord], name: str) -> None:
    data = photo(name)
    info = jpeg_info(data)
    assert info is not None
    records[2].fields.update({999: data, 6: str(info.width), 7: str(info.height)})


def test_sap_30_image_too_small_is_caught() -> None:
    records = nist.build_records(real_record())
    _frontal_image(records, SMALL_MUGSHOT)
    issues = revalidate(records)
    assert issues == [
        nist.NistIssue(10, "10.013 SAP", "IDC 1: SAP 30 needs at least 480x600 pixels; this image is 384x480")
    ]


def test_sap_30_wrong_aspect_is_caught() -> None:
    records = nist.build_records(real_record())
    _frontal_image(records, PORTRAIT_3X4)
    [issue] = revalidate(records)
    assert issue.field == "10.013 SAP" and "needs a 4:5 (width:height) image; 600x800 is 0.750" in issue.message


def test_sap_40_needs_3x4_768x1024_and_sxs() -> None:
    records = nist.build_records(real_record())
    records[2].fields[13] = "40"
    del records[2].fields[26]
    messages = [i.message for i in revalidate(records)]
    assert "IDC 1: SAP 40 needs at least 768x1024 pixels; this image is 480x600" in messages
    assert any("SAP 40 needs a 3:4" in m for m in messages)
    assert "IDC 1: mandatory field is missing (SAP 40)" in messages


def test_smt_without_description_is_refused() -> None:
    rec = real_record()
    smt = dataclasses.replace(rec.captures[3], description=None)  # the wire refuses this; the export too
    rec = dataclasses.replace(rec, captures=(*rec.captures[:3], smt))
    with pytest.raises(NistExportError) as err:
        nist.export_record(rec)
    assert [str(i) for i in err.value.issues] == ["Type-10 10.042 SMD: IDC 4: the mark has no description"]

    records = nist.build_records(real_record())
    del records[5].fields[42]
    assert [i.message for i in revalidate(records)] == [
        "IDC 4: an IMT TATTOO image needs its description (SMT descriptors, SMD)"
    ]


def test_bad_ori_and_dates_are_caught() -> None:
    rec = real_record(booking=wire.WireBooking("WA01", "2026-000123", "ofc-1187", factory.T0))  # bypasses the wire
    with pytest.raises(NistExportError) as err:
        nist.export_record(rec)
    fields = fields_of(err.value.issues)
    assert {"1.007 DAI", "1.008 ORI", "2.702 BOR"} <= set(fields)
    assert "Type-1 1.008 ORI: 'WA01' must be a 9-character agency identifier (A-Z, 0-9)" in map(str, err.value.issues)

    records = nist.build_records(real_record())
    records[0].fields[5] = "20261301"
    records[2].fields[5] = "2026-03-01"
    records[0].fields[14] = "20260301250000Z"
    assert fields_of(revalidate(records)) == ["1.005 DAT", "1.014 GMT", "10.005 PHD"]


def test_imt_pos_and_frontal_rules() -> None:
    records = nist.build_records(real_record())
    records[5].fields[20] = "L"  # a pose on a tattoo photo
    records[2].fields[13] = "20"  # frontal no longer SAP 30, the right profile still is
    records[3].fields[20] = "X"
    records[3].fields[3] = "FACES"
    issues = revalidate(records)
    assert nist.NistIssue(10, "10.020 POS", "IDC 4: POS describes a face; IMT TATTOO images do not carry it") in issues
    assert (
        nist.NistIssue(10, "10.003 IMT", "IDC 2: image type 'FACES' is not one of FACE, SCAR, MARK, TATTOO") in issues
    )
    assert (
        nist.NistIssue(
            10, "10.020 POS", "IDC 3: a best-practice SAP (30 and above) needs a frontal image (POS F) of that level"
        )
        in issues
    )


def test_image_checks_progressive_non_jfif_size_and_colour() -> None:
    with pytest.raises(NistExportError) as err:
        nist.export_record(swap_frontal(real_record(), PROGRESSIVE))
    assert "IDC 1: JPEGB needs a baseline (8-bit sequential) JPEG; this one is progressive" in [
        i.message for i in err.value.issues
    ]

    with pytest.raises(NistExportError) as err:
        nist.export_record(swap_frontal(real_record(), NO_JFIF))
    assert [i.field for i in err.value.issues] == ["10.999 DATA"]

    records = nist.build_records(real_record())
    records[2].fields[6] = "481"
    records[2].fields[12] = "GRAY"
    records[4].fields[999] = records[4].fields[999][:-2000]  # type: ignore[index]
    messages = [str(i) for i in revalidate(records)]
    assert "Type-10 10.006 HLL: IDC 1: HLL x VLL say 481x600; the JPEG is 480x600" in messages
    assert "Type-10 10.012 CSP: IDC 1: a 3-component JPEG is YCC, not GRAY" in messages
    assert "Type-10 10.999 DATA: IDC 3: the JPEG does not end with an EOI marker: the image is truncated" in messages


def test_sqs_and_text_formats() -> None:
    records = nist.build_records(real_record())
    records[2].fields[24] = (("101", "00G0", "0"),)
    records[3].fields[38] = "x" * 127
    messages = [i.message for i in revalidate(records)]
    assert "IDC 1: score '101' must be 0-100, 254 (not computed) or 255 (failed)" in messages
    assert "IDC 1: vendor id '00G0' must be 4 hex digits" in messages
    assert "IDC 1: product id '0' must be 1-65535" in messages
    assert "IDC 2: comment is longer than 126 characters" in messages


def test_unreadable_files_are_one_clear_issue() -> None:
    data = nist.export_record(real_record())
    for broken in (b"not a NIST file at all", data[:-10], data + b"extra"):
        [issue] = nist.validate_transaction(broken)
        assert issue.record_type == 0 and issue.message.startswith("nistitl cannot read the file")


def test_export_error_lists_every_issue_for_county_it() -> None:
    rec = swap_frontal(real_record(), PROGRESSIVE)
    with pytest.raises(NistExportError) as err:
        nist.export_record(rec)
    text = str(err.value)
    assert text.startswith(f"record {rec.record_id} is not a valid ANSI/NIST-ITL transaction:")
    assert "\n  - Type-10 10.011 CGA: IDC 1: JPEGB needs a baseline" in text
