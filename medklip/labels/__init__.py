"""Labels: reports -> (entity, position, existence) triplets -> label tensors; the knowledge text's embeddings.

`report_text` cleans and splits report text; `anatomy` maps phrases to the 51 positions; `triplets` defines a
triplet and builds the existence/position labels from them; `rule_extractor` (offline default) and
`radgraph_extractor` (RadGraph) read reports; `extract` is the cached, sharded extract step and reads its output
back as labels (`load_labels`); `quality` scores an extractor against labelled reports; `knowledge` encodes the 75
entity descriptions and 51 position prompts with a BERT. May import `medklip.data`, never the layers after it.
"""
