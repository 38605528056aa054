"""Procedural synthetic chest radiographs with radiology reports and ground truth.

Each case is a frontal (PA) chest radiograph drawn from a randomised anatomy (lungs, heart, mediastinum, spine, ribs,
clavicles, diaphragm, soft tissue) with zero or more rendered findings, a free-text report that states every finding,
and a truth table that ties every statement of the report to an (entity, position, existence) triple and a box.
Radiological convention: the patient's left is on the image right.

Run it:

    python -m medklip.data.synthetic --out data/synth --n 1000 --seed 0 [--size 256] [--workers 4]
    medklip data synth --out data/synth --n 1000 --seed 0

or from Python: `generate("data/synth", n=1000, seed=0)`; one case without files: `make_case(seed=0, index=7)`.

Output layout:

    images/synth-000001.png   8-bit grayscale, size x size
    reports.csv               id,image,findings,impression (image relative to the folder, rows in id order)
    truth.csv                 id,entity,position,existence,x0,y0,x1,y1

Truth conventions (what a report extractor is scored against; they follow docs/extraction.md):

- One row per (entity, position) that a sentence of the findings or the impression states. Entities and positions
  are names from `medklip.vocabulary` (never `tail_abnorm_obs` / `excluded_obs`); severity and size words (small,
  mild, large, 2.1 cm) give no rows.
- existence 1: stated present (a rendered finding, or a normal statement); 0: stated absent; -1: stated with
  uncertainty ("possible", "possibly", "cannot be excluded", "may represent", "could reflect", "suggestive of",
  "concerning for", "suspicious for").
- Box `x0,y0,x1,y1` in pixels, `image[y0:y1, x0:x1]` (x1, y1 exclusive): on every row about a rendered lesion or
  device (existence 1 or -1), empty on absent rows and normal statements.
- Positions come from the anatomy words of the finding's own phrase:
  effusion: "left pleural effusion" / "left effusion" -> left_pleural; bilateral -> left_pleural + right_pleural;
  "a small effusion blunts the left costophrenic angle" -> effusion and blunt at left_costophrenic ("both
  costophrenic angles" -> left_ and right_costophrenic); "No pleural effusion." -> pleural_unspec, "No effusion."
  -> unspecified. Pneumothorax: "right apical" / "at the right apex" -> right_apical_lung, "small right
  pneumothorax" -> right_pleural (a bare side of a pleural finding), "in the right hemithorax" -> right_lung_unspec.
  Lung lesions: lobes -> lower_right_lobe, middle_right_lobe, upper_left_lobe (also "lingula"/"lingular"), ...;
  zones -> right_upper_lung, left_mid_lung, "left basilar" / "at the left base" / "left lower lung" ->
  left_lower_lung; "right hilar" -> right_hilar; "bibasilar" / "at the lung bases" -> lung_bases;
  "retrocardiac" -> retrocardiac. Edema: "pulmonary edema" -> pulmonary, "interstitial edema" -> interstitium,
  "perihilar opacities" -> opacity at hilar_unspec, "pulmonary vascular congestion" -> congestion at pulmonary,
  "interstitial markings" -> marking at interstitium. Heart: cardiomegaly, "the heart is enlarged", "enlargement
  of the cardiac silhouette" -> cardiomegaly at heart_size. Devices: endotracheal tube -> tube at trachea;
  central venous catheter -> catheter, central (venous) line -> line, PICC -> picc, each at its end: svc,
  cavoatrial_junction or right_atrium; pacemaker -> pacemaker at other ("left chest wall"); leads -> lead at
  right_atrium / right_ventricle.
- An interpretation or alternative takes the site of the lesion it interprets: "Patchy right basilar opacity may
  represent atelectasis or early pneumonia." -> opacity 1, atelectasis -1, pneumonia -1, all at right_lower_lung.
  A consolidation called pneumonia in the impression gives "Right lower lobe pneumonia." -> pneumonia 1.
- Negated lists give one row per noun, each with its own anatomy words: "No pneumothorax or pleural effusion." ->
  pneumothorax at unspecified 0, effusion at pleural_unspec 0.
- Normal statements give their normal entity and the zeros they imply: "Lungs are clear." -> clear 1,
  consolidation 0, opacity 0 (unspecified); "Heart size is normal." -> normal 1, cardiomegaly 0 (heart_size);
  "Costophrenic angles are sharp." -> sharp 1, effusion 0 (costophrenic_unspec); "Pulmonary vasculature is
  normal." -> normal 1, congestion 0 (pulmonary); "Osseous structures are intact." -> intact 1, fracture 0
  (other); "Cardiomediastinal silhouette is within normal limits." -> normal at mediastinal; "Mediastinal
  contours are unremarkable." -> unremarkable at mediastinal; "The hila are normal." -> normal at hilar_unspec;
  "Lung volumes are normal." -> normal at lung_volumes; "No acute cardiopulmonary process / abnormality /
  disease." -> process / abnormality / disease at cardiopulmonary, 0.
"""

from medklip.data.synthetic.anatomy import cardiothoracic_ratio
from medklip.data.synthetic.case import (
    MAX_CASES,
    REPORT_COLUMNS,
    SIZE_RANGE,
    TRUTH_COLUMNS,
    VERSION,
    Anatomy,
    Case,
    CaseSpec,
    Finding,
    SynthSummary,
    TruthRow,
    case_id,
)
from medklip.data.synthetic.findings import sample_spec
from medklip.data.synthetic.generator import check_request, generate, main, make_case
from medklip.data.synthetic.render import render
from medklip.data.synthetic.reports import write_report

__all__ = [
    "MAX_CASES",
    "REPORT_COLUMNS",
    "SIZE_RANGE",
    "TRUTH_COLUMNS",
    "VERSION",
    "Anatomy",
    "Case",
    "CaseSpec",
    "Finding",
    "SynthSummary",
    "TruthRow",
    "cardiothoracic_ratio",
    "check_request",
    "case_id",
    "generate",
    "main",
    "make_case",
    "render",
    "sample_spec",
    "write_report",
]
