"""Writing a Hugging Face tokenizer directory (for `to_hf`): tokenizer.model, tokenizer_config.json with
the chat template and added_tokens_decoder, special_tokens_map.json and added_tokens.json, so that
transformers' LlamaTokenizer and our HFTokenizer read it back with the same ids."""
import json
import os
import shutil
from typing import List

from sentencepiece import sentencepiece_model_pb2

from .hf_tokenizer import MODEL_FILE, SPECIAL_ATTRS, AddedToken, HFTokenizer, load_tokenizer
from .tokenizer import SPTokenizer


def _token_entry(tok: AddedToken) -> dict:
    return {"content": tok.content, "lstrip": tok.lstrip, "normalized": False, "rstrip": tok.rstrip,
            "single_word": tok.single_word, "special": tok.special}


def write_tokenizer_files(tokenizer, out_dir: str) -> List[str]:
    """Write tokenizer.model, added_tokens.json (when tokens follow the pieces), tokenizer_config.json
    (chat template, added_tokens_decoder, special tokens, add_bos/eos) and special_tokens_map.json into
    out_dir, so that transformers' LlamaTokenizer and HFTokenizer read it back with the same ids.

    `tokenizer`: an HFTokenizer, an SPTokenizer (our own: no BOS added, "</s>" in text is text, i.e.
    split_special_tokens), or a path for load_tokenizer. Returns the names written."""
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    os.makedirs(out_dir, exist_ok=True)
    if isinstance(tokenizer, HFTokenizer):
        cfg, special_map, added = _hf_files(tokenizer)
        model_file = tokenizer.model_file
    elif isinstance(tokenizer, SPTokenizer):
        cfg, special_map, added = _sp_files(tokenizer)
        model_file = tokenizer.model_path
    else:
        raise TypeError(f"write_tokenizer_files needs an HFTokenizer or SPTokenizer, got {type(tokenizer).__name__}")
    shutil.copyfile(model_file, os.path.join(out_dir, MODEL_FILE))
    files = {"tokenizer_config.json": cfg, "special_tokens_map.json": special_map}
    if added:
        files["added_tokens.json"] = added
    for name, obj in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
    return [MODEL_FILE, *files]


def _hf_files(tok: HFTokenizer):
    cfg = dict(tok.tokenizer_config or {})
    cfg.update({"tokenizer_class": cfg.get("tokenizer_class", "LlamaTokenizer"), "legacy": True,
                "add_bos_token": tok.add_bos, "add_eos_token": tok.add_eos,
                "add_prefix_space": tok.add_prefix_space,
                "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces,
                "added_tokens_decoder": {str(i): _token_entry(t) for i, t in sorted(tok.added_decoder.items())},
                "additional_special_tokens": list(tok.additional_special_tokens)})
    if tok.split_special_tokens:
        cfg["split_special_tokens"] = True
    for key in SPECIAL_ATTRS:
        cfg[key] = tok.special[key]
    if tok.chat_template:
        cfg["chat_template"] = tok.chat_template
    special_map = {key: _token_entry(tok.added_decoder[tok.added_encoder[tok.special[key]]])
                   for key in SPECIAL_ATTRS if tok.special[key]}
    for entry in special_map.values():
        entry.pop("special")
    if tok.additional_special_tokens:
        special_map["additional_special_tokens"] = list(tok.additional_special_tokens)
    added = {t.content: i for i, t in tok.added_tokens.items()}
    return cfg, special_map, added


def _sp_files(tok: SPTokenizer):
    sp = tok.sp
    named = {"bos_token": sp.bos_id(), "eos_token": sp.eos_id(), "unk_token": sp.unk_id(), "pad_token": sp.pad_id()}
    special = {k: sp.id_to_piece(i) for k, i in named.items() if 0 <= i < sp.get_piece_size()}
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    cfg = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": False, "add_eos_token": False,
           "add_prefix_space": bool(proto.normalizer_spec.add_dummy_prefix), "clean_up_tokenization_spaces": False,
           "split_special_tokens": True, "sp_model_kwargs": {}, **special,
           "added_tokens_decoder": {str(named[k]): _token_entry(AddedToken(t)) for k, t in
                                    sorted(special.items(), key=lambda kv: named[kv[0]])}}
    return cfg, dict(special), {}
