"""Data: from a source to batches. The first layer of the pipeline; it imports only `medklip.vocabulary`/`config`.

`sources` opens a source (`hf://`, `folder://`, `synthetic://`); `images` decodes and bounds one image; `prepare`
decodes a source once into uint8 shards plus a reports table, and `PreparedData` reads such a folder back;
`augment` crops, rotates and adjusts a view; `boxes` reads lesion boxes and turns them into patch masks;
`dataset` is the torch Dataset and its loaders; `synthetic/` generates radiographs with reports and true boxes.
Nothing here knows labels, models, training, evaluation or tracking.
"""
