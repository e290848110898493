"""Train CTAL's byte-level BPE tokenizer on your transcripts (the `ctal-train-tokenizer` command).

python examples/train_tokenizer.py transcripts.txt manifest.csv --vocab-size 30000 --output-dir my-tokenizer
python examples/train_tokenizer.py --help
"""

from ctal_hf.models.ctal.tokenization_ctal import main


if __name__ == "__main__":
    raise SystemExit(main())
