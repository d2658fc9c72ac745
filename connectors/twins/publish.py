"""Publishing twin-entity assets and their profiles through the one publish path
(``connectors.publish``): the profile is checked and built before anything is sent, carries its
declaration (source asset + version + SHA-256, method, de-identification) in its table, and is
catalogued with its subject's twin category, a ``code:<prefix>`` keyword and its own offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.errors import PublishError
from connectors.publish import prepare, publish_file
from connectors.tables import file_sha256, read_table, table_to_ipc_bytes, write_table
from connectors.twins.profiles import Profile


def load_source(path: Path):
    """The table a profile is computed from and the SHA-256 the catalog will know it by."""
    return read_table(Path(path)), file_sha256(Path(path))


def profile_description(profile: Profile) -> str:
    src = profile.source or {}
    sup = sum(profile.deid.get("groups_suppressed", {}).values())
    return (f"Entity profile (实体画像) of {profile.entities} {profile.entity_type} entities "
            f"(unified codes {profile.code_prefix}:*), derived from asset {src.get('asset_id', '?')} "
            f"v{src.get('version', '?')} (sha256 {str(src.get('content_sha256', '?'))[:16]}…) by "
            f"{profile.method['name']} v{profile.method['version']}: {profile.method['description']}. "
            f"De-identification: k-threshold k={profile.deid['k']}, {sup} group(s) suppressed; no row-level data.")


def profile_keywords(profile: Profile, extra: list[str] | None = None) -> list[str]:
    return [*(extra or []), "entity-profile", "实体画像", f"profile:{profile.kind}", f"code:{profile.code_prefix}"][:50]


def check_profile(profile: Profile, *, classification: str, domain: str, offers: list[dict[str, Any]],
                  title: str) -> None:
    """Everything ``publish_profile`` checks locally, without a source bound yet (so a caller can refuse
    before publishing the source asset)."""
    prepare(table_to_ipc_bytes(profile.table()), title=title, classification=classification, domain=domain,
            offers=offers, keywords=profile_keywords(profile), twin_category=profile.twin_category,
            entity_type=profile.entity_type, bbox=profile.bbox)


def publish_profile(client, profile: Profile, work_dir: Path, *, title: str, classification: str, domain: str,
                    offers: list[dict[str, Any]], connector, keywords: list[str] | None = None,
                    asset_id: str | None = None) -> dict[str, Any]:
    """Publish a profile bound to its source asset (``Profile.with_source``)."""
    src = profile.source or {}
    if not src.get("asset_id") or not src.get("version"):
        raise PublishError("a profile declares the asset and version it derives from: bind it with "
                           "Profile.with_source(asset) first", code="profile_unbound")
    path = Path(work_dir) / f"profile-{profile.kind}-{src['asset_id']}-v{src['version']}.arrow"
    write_table(path, profile.table())
    return publish_file(client, path, title=title, description=profile_description(profile),
                        keywords=profile_keywords(profile, keywords), classification=classification, domain=domain,
                        offers=offers, twin_category=profile.twin_category, entity_type=profile.entity_type,
                        bbox=profile.bbox, asset_id=asset_id, connector=connector)


def publish_with_profile(client, source_path: Path, profile: Profile, work_dir: Path, *, connector,
                         source: dict[str, Any], profile_meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Publish a source table and its profile as a pair. Both are checked locally first; if the profile
    is then refused by the broker, the just-published source is withdrawn, so no half pair stays."""
    check_profile(profile, **{k: profile_meta[k] for k in ("classification", "domain", "offers", "title")})
    asset = publish_file(client, source_path, connector=connector, **source)
    try:
        prof = publish_profile(client, profile.with_source(asset), work_dir, connector=connector, **profile_meta)
    except Exception as exc:
        try:
            client.catalog_withdraw(asset["id"], "its entity profile could not be published")
        except Exception:  # noqa: BLE001 - report the original failure; the withdrawal is best effort
            pass
        raise exc
    return asset, prof
