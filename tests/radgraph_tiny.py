"""Builds a tiny, random-weight RadGraph model folder that the real `radgraph.RadGraph` loader accepts, offline.

The folder has the layout of an extracted `modern-radgraph-xl.tar.gz` (what `RadGraph(model_cache_dir=...)` reads):

    <root>/<model_type>/config.json      DyGIE config (dataset reader, embedder, modules, loss weights)
    <root>/<model_type>/vocabulary/      allennlp vocabulary: NER and relation label namespaces of the dataset
    <root>/<model_type>/weights.th       state_dict of a randomly initialised DyGIE model (loads with strict=True)
    <root>/tiny-bert/                    local BERT config + WordPiece tokenizer that config.json points to

Only the encoder size differs from the real model (a 2-layer, 32-wide BERT instead of a full-size one), so every
code path of the package (tokenisation, span enumeration, NER, pruning, relations, postprocessing) runs for real;
the predictions are arbitrary but well-formed.

    python -c "from pathlib import Path; from tests.radgraph_tiny import build_tiny_radgraph as b; print(b(Path('x')))"
"""

from __future__ import annotations

import json
from pathlib import Path

# RadGraph-XL's entity labels (also modern-radgraph-xl's) and its three relations.
XL_NER_LABELS = (
    "Anatomy::definitely present",
    "Observation::definitely present",
    "Observation::definitely absent",
    "Observation::uncertain",
    "Observation::measurement::definitely present",
    "Anatomy::uncertain",
    "Anatomy::definitely absent",
    "Anatomy::measurement::definitely present",
    "Observation::measurement::definitely absent",
    "Observation::measurement::uncertain",
    "Anatomy::measurement::uncertain",
)
V1_NER_LABELS = ("ANAT-DP", "OBS-DP", "OBS-DA", "OBS-U")
RELATION_LABELS = ("modify", "located_at", "suggestive_of")

REPORT_WORDS = """
no there is are the a an of and or with without in at to on from for by as be been has have was were not seen
evidence new small large moderate mild stable unchanged left right bilateral lower upper middle mid lobe lobes
lung lungs base bases apex apical basilar bibasilar pleural effusion effusions pneumothorax opacity opacities
consolidation atelectasis edema cardiomegaly heart size normal enlarged cardiac silhouette mediastinal contours
clear sharp costophrenic angle angles tube tip line catheter picc pacemaker leads wire wires sternotomy fracture
rib ribs spine aorta tortuous calcified hilar pulmonary vascular congestion interstitial markings process acute
cardiopulmonary abnormality possible likely may represent cannot excluded pneumonia aspiration infection nodule
mass emphysema hyperinflated low volumes retrocardiac carina above cm svc atrium ptx chest et ng stomach findings
"""
WORDS = REPORT_WORDS.split()
PIECES = ["##s", "##es", "##ed", "##ing", "##al", "##ly", "##ar", "##ic", "##y", "##e", "##a", "##i", "##o", "##u"]
PUNCT = list(".,;:()-/%'\"!?")
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _write_tiny_bert(folder: Path) -> Path:
    """A 2-layer, hidden-32 BERT config and a WordPiece tokenizer over report words, saved to `folder`."""
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(SPECIAL + PUNCT + LETTERS + ["##" + c for c in LETTERS] + PIECES + WORDS))
    # vocab.txt + tokenizer_config.json is what AutoTokenizer loads in transformers 4 and 5 alike (5.x's
    # BertTokenizer(vocab_file=...) silently ignores the file, so we do not build the tokenizer object here).
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 128}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    config.save_pretrained(folder)
    return folder


def dygie_config(bert_dir: Path, max_length: int = 128) -> dict:
    """The DyGIE config keys `radgraph.RadGraph.__init__` reads, shaped like the released models' config.json."""
    bert = {"type": "pretrained_transformer_mismatched", "model_name": str(bert_dir), "max_length": max_length}
    return {
        "dataset_reader": {"type": "dygie", "token_indexers": {"bert": dict(bert)}, "max_span_width": 4},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": dict(bert)}},
            "initializer": {"regexes": [["_span_width_embedding.weight", {"type": "xavier_normal"}]]},
            "module_initializer": {"regexes": [[".*weight", {"type": "xavier_normal"}]]},
            "loss_weights": {"ner": 0.2, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "feature_size": 8,
            "max_span_width": 4,
            "target_task": "relation",
            "feedforward_params": {"num_layers": 2, "hidden_dims": 16, "dropout": 0.4},
            "modules": {
                "coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0},
                "ner": {},
                "relation": {"spans_per_word": 0.5},
                "events": {
                    "trigger_spans_per_word": 0.3,
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"trigger": 0.2, "arguments": 1.0},
                },
            },
        },
    }


def _write_vocabulary(folder: Path, dataset: str, ner_labels: tuple[str, ...]) -> None:
    """allennlp vocabulary files: NER labels with the null label "" first (index 0), relation labels unpadded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "non_padded_namespaces.txt").write_text("*tags\n*labels\n")
    (folder / f"{dataset}__ner_labels.txt").write_text("\n".join(("", *ner_labels)) + "\n")
    (folder / f"{dataset}__relation_labels.txt").write_text("\n".join(RELATION_LABELS) + "\n")


def build_tiny_radgraph(root: Path, model_type: str = "modern-radgraph-xl", seed: int = 0) -> Path:
    """Writes `<root>/<model_type>/{config.json, vocabulary/, weights.th}` and `<root>/tiny-bert/`.

    Args:
        root: the folder to pass as radgraph's `model_cache_dir` (our `model_dir`).
        model_type: the radgraph model type, which is also the dataset name of the label namespaces.
        seed: torch seed for the random weights.

    Returns:
        `root`.
    """
    import torch
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    from medklip.labels.radgraph_extractor import tokenizer_api_compat

    root = Path(root)
    model_dir = root / model_type
    model_dir.mkdir(parents=True, exist_ok=True)
    bert_dir = _write_tiny_bert(root / "tiny-bert")
    config = dygie_config(bert_dir)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    _write_vocabulary(
        model_dir / "vocabulary", model_type, V1_NER_LABELS if model_type == "radgraph" else XL_NER_LABELS
    )

    torch.manual_seed(seed)
    vocab = Vocabulary.from_files(str(model_dir / "vocabulary"))
    with tokenizer_api_compat():  # the vendored allennlp needs it under transformers 5, as radgraph.RadGraph does
        bert = token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert_dir), max_length=128)
    embedder = text_field_embedders.BasicTextFieldEmbedder({"bert": bert})
    params = {
        k: v for k, v in config["model"].items() if k not in ("type", "embedder", "initializer", "module_initializer")
    }
    model = dygie.DyGIE(vocab=vocab, embedder=embedder, **params)
    torch.save(model.state_dict(), model_dir / "weights.th")
    return root
