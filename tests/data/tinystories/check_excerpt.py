"""Check the excerpt against the sample it was cut from (when that sample is at hand).

    python tests/data/tinystories/check_excerpt.py [SAMPLE_DIR]

SAMPLE_DIR (default: `shared/data/tinystories` beside the repository) holds
`tinystories_v1_train_head2MiB.txt` and `tinystories_hf_train_first1000_ge128tok.json`. As the
README here says: the .txt excerpt is a byte prefix of the first, the .json excerpt the first 100
strings of the second, serialised as it is. Exits 1 naming what differs. (Not a test: the suite
runs without the sample; the suite checks each excerpt file against its README's sha256.)
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parents[2] / ".." / "shared" / "data" / "tinystories"


def main(sample: Path) -> int:
    full_txt = sample / "tinystories_v1_train_head2MiB.txt"
    full_json = sample / "tinystories_hf_train_first1000_ge128tok.json"
    txt = (HERE / "tinystories_v1_train_head330000B.txt").read_bytes()
    if full_txt.read_bytes()[:len(txt)] != txt:
        print(f"{full_txt}: its first {len(txt)} bytes are not the .txt excerpt")
        return 1
    rows = json.loads(full_json.read_text(encoding="utf-8"))
    excerpt = (HERE / "tinystories_hf_train_first100_ge128tok.json").read_text(encoding="utf-8")
    if json.dumps(rows[:100], indent=1, ensure_ascii=False) != excerpt:
        print(f"{full_json}: its first 100 strings are not the .json excerpt")
        return 1
    if json.dumps(rows, indent=1, ensure_ascii=False) != full_json.read_text(encoding="utf-8"):
        print(f"{full_json}: not serialised as the excerpt is")
        return 1
    print(f"the excerpt is cut from {sample} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
