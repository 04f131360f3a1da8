"""A booking record as an ANSI/NIST-ITL 1-2011 transaction (traditional encoding): builder and validator.

The county's mug-shot tools read ANSI/NIST-ITL files, not our CBOR records. This package turns one
verified :class:`~sync.protocol.wire.WireRecord` into one transaction: a Type-1 header, one Type-2 with the
booking data and one Type-10 per capture. ``nistitl`` (PyPI, CeCILL-C) is used as the byte codec
only: it computes LEN and CNT and splits the separators, and checks nothing else. Everything the
standard (and the county's reader) requires is checked here, by :func:`validate_transaction`,
on the bytes as ``nistitl`` reads them back, so an export that passes is what the county receives.

Field mapping (``F`` = frontal, ``L``/``R`` = left/right profile, ``S`` = scar/mark/tattoo capture)
--------------------------------------------------------------------------------------------------
======== ===== ========================================================================================
Field    Name  Value
======== ===== ========================================================================================
1.002    VER   ``0500`` (ANSI/NIST-ITL 1-2011; set ``0501``/``0502`` for the 2013/2015 updates once the
               receiving spec confirms the code: neither is confirmed by a published source yet)
1.003    CNT   computed: ``1<US>n`` then ``type<US>IDC`` per record, in file order
1.004    TOT   ``MUG`` by default. Agency-defined: the FBI's EBTS arrest TOTs (``CAR``, ``CNA``) require
               fingerprints, so a photo-only transaction must not claim them. Configurable.
1.005    DAT   the record's creation date (``created_at``) in the agency's time zone, ``YYYYMMDD``
1.007    DAI   ``dai`` from the config, else the booking ORI
1.008    ORI   the booking's agency ORI (9 characters, as the wire already enforces)
1.009    TCN   the record id (UUIDv7, 36 characters): the gallery's idempotency key, end to end
1.011/12 NSR/  ``00.00``: these give the scanning resolution of friction-ridge images (Types 3-7); a
         NTR   photo-only transaction has none. Configurable for a receiver that insists on 19.69.
1.013    DOM   only when configured (e.g. ``NORAM`` and a version for an EBTS receiver)
1.014    GMT   ``created_at`` in UTC, ``YYYYMMDDHHMMSSZ``
1.015    DCS   ``003<US>UTF-8`` only when some text is not 7-bit ASCII (the default character set)
2.002    IDC   ``0``
2.701    BKN   booking number          } Type-2 content is agency-defined (the standard only fixes
2.702    BOR   booking agency ORI      } 2.001/2.002). These numbers sit in a block EBTS does not
2.703    OPR   operator id             } use; a county remaps them with ``type2_fields``.
2.704    CDT   capture time, UTC, ``YYYYMMDDHHMMSSZ``
2.705    STN   station slug
2.706    RID   record id
10.002   IDC   1, 2, ... in capture order
10.003   IMT   ``FACE`` for F/L/R; for S ``TATTOO`` or ``SCAR`` when the description says so (first of
               the words "tattoo..."/"scar..." wins), else ``MARK`` (moles, birthmarks, needle marks,
               brands, piercings: the catch-all)
10.004   SRC   ``src`` from the config, else the booking ORI
10.005   PHD   the booking's capture date in the agency's time zone
10.006/7 HLL/  width and height read from the JPEG frame header (never from metadata)
         VLL
10.008-10 SLC  ``0`` (no physical scale: a camera photo has none) with THPS = TVPS = ``1``: square pixels
10.011   CGA   ``JPEGB``: the station's JPEG, byte for byte (never re-encoded)
10.012   CSP   ``YCC`` for a 3-component JPEG, ``GRAY`` for 1
10.013   SAP   FACE only; see *SAP* below
10.020   POS   FACE only: frontal ``F``; left_profile ``L`` and right_profile ``R`` when the station's
               profile check passed, else the measured pose (``D``, or ``F``); see ``pose``
10.024   SQS   F only: ``QVU<US>QAV<US>QAP`` = the unified quality score 0-100 (254 when the record has
               none, 255 when the station failed to assess it), the configured vendor id (4 hex) and
               product id. Not on profiles: ISO/IEC 29794-5 scores frontal faces, and on a profile
               it would only measure how far from frontal the head is.
10.025   SPA   FACE, when the station measured the head pose: yaw (the standard's sign, minus ours),
               pitch, roll in whole degrees
10.026   SXS   F only: ``NEUTRAL`` when the eyes-open, mouth-closed and neutral-expression gates all
               passed; ``BLINK``/``MOUTH OPEN``/``HAT`` for those gates failing; ``UNKNOWN`` when
               nothing is known and the SAP (40, 50, 51) makes SXS mandatory
10.038   COM   why the image was kept or downgraded (officer override reason, SAP fallback), <= 126,
               shortened between words with ``...`` keeping each reason's code
10.042   SMD   S only: ``SMI<US>TAC<US>TSC<US>TDS`` = IMT, tattoo class/subclass (``OTHER``/``MISC``
               for tattoos, empty otherwise) and the officer's description (<= 256 characters)
10.902   ANN   standardized frontal only: ``GMT<US>NAV<US>OWN<US>PRO`` recording the rotation/crop/scale
10.992   T2C   ``0`` (the Type-2 IDC), only for VER 0501 and later (the field is new in the 2013 update)
10.999   DATA  the JPEG bytes
======== ===== ========================================================================================

Not written: 10.040 SMT (NCIC SMT code). The standard says its content "shall be from the NCIC code",
and the wire carries only the officer's free-text description; guessing an NCIC code from free text
would put wrong data in a coded field. The description goes to SMD's description item instead.

SAP (10.013)
------------
The station's quality report names the profile's SAP (``quality.report.sap``). A FACE image claims it
only when (a) for the frontal view, the station's gates passed with no officer override, and (b) the
image meets that level's geometry (Annex E): SAP 30/32 at least 480x600 and 4:5 (W:H), SAP 40/50/51 at
least 768x1024 and 3:4, SAP 42/52 3:4 and at least 480x600; aspect within 1%, and (c) for a profile view,
the level is one of 30 and above and the frontal view has at least that level. Otherwise the image is
exported as SAP ``fallback_sap`` (20, "legacy mug shot": a booking photo not shown to meet a best-practice
level) and COM says why. Profile crops are rarely 4:5, so profiles usually export as 20: claiming 30 for
them would be false, and a strict county reader would refuse the file.

POS (10.020) follows the standard's meaning: ``L`` = left profile = the subject's left side faces the
camera (-90 degrees yaw), ``R`` the right side (+90). The station's ``left_profile``/``right_profile`` mean
the same (the subject's side); its guidance asks the subject to turn to their right for the left profile.

Validation issues are ``(record_type, field, message)``; record type 0 means the file as a whole.

Modules: ``codes`` (the code tables), ``model`` (records, issues, errors), ``config`` (:class:`NistConfig`),
``jpeg`` (the frame header the Type-10 fields must agree with), ``pose`` (POS and SPA), ``builder`` (a wire
record as records), ``codec`` (bytes through ``nistitl``) and ``validate`` (the rule tables). Everything is
importable from here.
"""

from __future__ import annotations

from sync.county.gallery.nist.builder import (
    build_records,
    claimed_sap,
    facial_description,
    smt_image_type,
    unified_quality,
)
from sync.county.gallery.nist.codec import canonical, decode_transaction, encode_records, require_codec
from sync.county.gallery.nist.codes import (
    ASPECT_TOLERANCE,
    CGA_CODES,
    CHARSETS,
    COM_MAX,
    CSP_CODES,
    FS,
    GS,
    IMT_CODES,
    MNEMONICS,
    POS_CODES,
    POSE_TO_POS,
    RS,
    SAP_CODES,
    SMT_IMTS,
    SXS_CODES,
    SXS_MANDATORY_SAPS,
    TATTOO_CLASSES,
    TDS_MAX,
    TYPE2_DEFAULT_FIELDS,
    TYPE2_MNEMONICS,
    US,
    VERSIONS,
    sap_geometry_problems,
)
from sync.county.gallery.nist.config import NistConfig
from sync.county.gallery.nist.model import (
    FieldValue,
    NistCodecMissing,
    NistConfigError,
    NistExportError,
    NistFormatError,
    NistIssue,
    NistRecord,
)
from sync.county.gallery.nist.validate import validate_records, validate_transaction
from sync.protocol.jpeg import JpegInfo, jpeg_info
from sync.protocol.wire import WireRecord

__all__ = [
    "ASPECT_TOLERANCE", "CGA_CODES", "CHARSETS", "COM_MAX", "CSP_CODES", "FS", "GS", "IMT_CODES", "MNEMONICS",
    "POSE_TO_POS", "POS_CODES", "RS", "SAP_CODES", "SMT_IMTS", "SXS_CODES", "SXS_MANDATORY_SAPS", "TATTOO_CLASSES",
    "TDS_MAX", "TYPE2_DEFAULT_FIELDS", "TYPE2_MNEMONICS", "US", "VERSIONS", "FieldValue", "JpegInfo",
    "NistCodecMissing", "NistConfig", "NistConfigError", "NistExportError", "NistFormatError", "NistIssue",
    "NistRecord", "build_records", "canonical", "claimed_sap", "decode_transaction", "encode_records",
    "export_record", "facial_description", "jpeg_info", "require_codec", "sap_geometry_problems",
    "smt_image_type", "unified_quality", "validate_records", "validate_transaction",
]  # fmt: skip


def export_record(record: WireRecord, config: NistConfig | None = None) -> bytes:
    """The record as a validated ANSI/NIST-ITL transaction; raises :class:`NistExportError` with the
    issues when it would not be valid (nothing invalid ever leaves the gallery)."""
    config = config or NistConfig()
    records = build_records(record, config)
    data = encode_records(records)
    issues = validate_transaction(data, expected=records, config=config)
    if issues:
        raise NistExportError(record.record_id, issues)
    return data
