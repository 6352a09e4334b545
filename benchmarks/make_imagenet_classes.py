"""Write ``src/cnnkit/pretrained/imagenet_classes.json``: the 1,000 ImageNet-1k class ids and names.

Sources (both offline, both from PyPI packages):
- WordNet ids, in the sorted order every ImageNet-1k classifier uses for its 1,000 outputs:
  ``timm/data/_info/imagenet_synsets.txt`` from the ``timm`` wheel (Apache-2.0). Fetch it with
  ``pip download --no-deps timm -d /tmp/timm_wheel`` and unzip; timm itself is not a dependency.
- Names: torchvision's ``torchvision.models._meta._IMAGENET_CATEGORIES`` (BSD-3-Clause), the names
  its weights' ``meta["categories"]`` carry (unique: "crane" the bird is "crane bird").

The script checks the two lists agree: each torchvision name must be one of the WordNet lemmas timm
lists for the id at the same index, or start with one (torchvision's "crane bird" for "crane" and
"maillot tank suit" for "maillot, tank suit").

Usage: python benchmarks/make_imagenet_classes.py /tmp/timm_wheel/timm/data/_info
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from torchvision.models._meta import _IMAGENET_CATEGORIES

OUT = Path(__file__).resolve().parents[1] / "src/cnnkit/pretrained/imagenet_classes.json"


def main(info_dir: str) -> None:
    info = Path(info_dir)
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(
        line.split("\t", 1)
        for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines()
    )
    if len(wnids) != 1000 or wnids != sorted(wnids) or len(_IMAGENET_CATEGORIES) != 1000:
        raise SystemExit("expected 1,000 sorted WordNet ids and 1,000 torchvision names")
    for index, (wnid, name) in enumerate(zip(wnids, _IMAGENET_CATEGORIES, strict=True)):
        words = {w.strip().lower() for w in lemmas[wnid].split(",")}
        if not any(name.lower().startswith(word) for word in words):
            raise SystemExit(f"class {index}: {wnid} ({lemmas[wnid]}) does not match {name!r}")
    # One [wnid, name] pair per line: readable, and a diff shows exactly which class changed.
    rows = ",\n".join(
        "  " + json.dumps([w, n]) for w, n in zip(wnids, _IMAGENET_CATEGORIES, strict=True)
    )
    source = "wnids: timm imagenet_synsets.txt; names: torchvision _IMAGENET_CATEGORIES"
    OUT.write_text(f'{{"source": {json.dumps(source)},\n "classes": [\n{rows}\n]}}\n')
    print(f"wrote {OUT} ({len(wnids)} classes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/timm_wheel/timm/data/_info")
