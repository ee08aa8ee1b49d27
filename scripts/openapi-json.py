#!/usr/bin/env python3
"""Writes docs/openapi.json from docs/openapi.yaml: the document the edge serves at
GET /client/v4/openapi.json (compiled in with include_str!).

The JSON records the SHA-256 of the YAML it was made from in `x-source-sha256`; a
test of the edge crate (`the_served_openapi_document_is_generated_from_the_yaml`)
fails when the YAML has changed since. Run this after editing the YAML:

    python3 scripts/openapi-json.py          # needs PyYAML (pip install pyyaml)
    python3 scripts/openapi-json.py --check  # exit 1 if docs/openapi.json is stale
"""

import hashlib
import json
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("openapi-json.py needs PyYAML: pip install pyyaml (or apt-get install python3-yaml)")

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "docs" / "openapi.yaml"
TARGET = ROOT / "docs" / "openapi.json"


def render() -> str:
    raw = SOURCE.read_bytes()
    document = yaml.safe_load(raw)
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3.1"):
        sys.exit(f"{SOURCE} is not an OpenAPI 3.1 document")
    # Recorded first, so a reader sees at once what the file was made from.
    document = {"x-source-sha256": hashlib.sha256(raw).hexdigest(), **document}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv[1:]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            sys.exit(f"{TARGET} is out of date: run scripts/openapi-json.py")
        return
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
