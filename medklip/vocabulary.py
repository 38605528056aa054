"""MedKLIP's fixed vocabularies: the 75 observation entities, the 51 anatomical positions, and their text.

Everything here is plain data, with no torch or numpy, so the triplet extractor, the data pipeline and the model can
all import it cheaply:

- `ENTITIES` and `POSITIONS` copy MedKLIP's label order exactly (`adj_matrix.py:OBSERVATION_CLASS` and
  `LANDMARK_NAME`); index `i` of a label tensor means `ENTITIES[i]`. Never reorder them: a checkpoint's heads and its
  stored text embeddings follow this order.
- `DESCRIPTIONS` is the knowledge book: one short clinical description per entity, written for this project (MedKLIP's
  own `observation explanation.json` is Wikipedia-derived). A clinical BERT embeds them once as the entity queries.
- `POSITION_PROMPTS` are the sentences the same encoder embeds for the 51 positions (position-contrastive loss).
- `SYNONYMS` and `POSITION_SYNONYMS` are the surface phrases a rule-based report extractor maps to each entity and
  position. They fold in MedKLIP's manual lemma normalisation (e.g. "opacification" -> opacity, "pacer" -> pacemaker,
  "infectious process" -> pneumonia) and AGXNet's anatomy rules (`DICT_ANATOMICAL_LANDMARKS`).

Matching contract for extractors: lower-case the text and match phrases on word boundaries, leftmost-longest first.
Longer phrases deliberately contain shorter phrases owned by another entity or position ("enlarged cardiac
silhouette" is cardiomegaly, "enlarged" is enlarge; "left lower lobe" is lower_left_lobe, "left lung" is
left_lung_unspec), so a longest-match scan is what makes the more specific owner win. Every phrase has exactly one
owner within its table, and no phrase is in both tables.

Quick look:

    python -c "from medklip import entities as e; print(len(e.ENTITIES), len(e.POSITIONS))"
"""

from __future__ import annotations

ENTITIES: tuple[str, ...] = (
    # 0-7: NORM_OBS, statements of normality
    "normal",
    "clear",
    "sharp",
    "sharply",
    "unremarkable",
    "intact",
    "stable",
    "free",
    # 8-72: ABNORM_OBS, the lemmas covering the top 90% of abnormal mentions in MIMIC-CXR RadGraph
    "effusion",
    "opacity",
    "pneumothorax",
    "edema",
    "atelectasis",
    "tube",
    "consolidation",
    "process",
    "abnormality",
    "enlarge",
    "tip",
    "low",
    "pneumonia",
    "line",
    "congestion",
    "catheter",
    "cardiomegaly",
    "fracture",
    "air",
    "tortuous",
    "lead",
    "disease",
    "calcification",
    "prominence",
    "device",
    "engorgement",
    "picc",
    "clip",
    "elevation",
    "expand",
    "nodule",
    "wire",
    "fluid",
    "degenerative",
    "pacemaker",
    "thicken",
    "marking",
    "scar",
    "hyperinflate",
    "blunt",
    "loss",
    "widen",
    "collapse",
    "density",
    "emphysema",
    "aerate",
    "mass",
    "crowd",
    "infiltrate",
    "obscure",
    "deformity",
    "hernia",
    "drainage",
    "distention",
    "shift",
    "stent",
    "pressure",
    "lesion",
    "finding",
    "borderline",
    "hardware",
    "dilation",
    "chf",
    "redistribution",
    "aspiration",
    # 73-74: catch-all groups
    "tail_abnorm_obs",
    "excluded_obs",
)

TAIL_ENTITY = "tail_abnorm_obs"  # any abnormal observation lemma outside the 73 named ones
EXCLUDED_ENTITY = "excluded_obs"  # the EXCLUDED_OBSERVATIONS lemmas

NORMAL_ENTITIES: tuple[str, ...] = ENTITIES[:8]

# adj_matrix.py:EXCLUDED_OBS. These lemmas describe change, size or context rather than a visual finding; MedKLIP
# folds them all into the single `excluded_obs` class. No SYNONYMS phrase is allowed to equal one of them.
EXCLUDED_OBSERVATIONS: tuple[str, ...] = (
    "none",
    "unchanged",
    "change",
    "great",
    "similar",
    "large",
    "small",
    "moderate",
    "mild",
    "median",
    "decrease",
    "bad",
    "more",
    "constant",
    "worsen",
    "new",
    "improve",
    "status",
    "position",
    "sternotomy",
    "cabg",
    "replacement",
    "postoperative",
    "assessment",
    "patient",
)

# model_MedKLIP.py:excluded_disease, for the "unseen diseases" ablation. The original list also names 'fibrosis',
# which is not one of the 75 (it falls into tail_abnorm_obs), so only these 7 are actually held out.
UNSEEN_ENTITIES: tuple[str, ...] = ("pneumonia", "infiltrate", "mass", "nodule", "emphysema", "thicken", "hernia")

POSITIONS: tuple[str, ...] = (
    "trachea",
    "left_hilar",
    "right_hilar",
    "hilar_unspec",
    "left_pleural",
    "right_pleural",
    "pleural_unspec",
    "heart_size",
    "heart_border",
    "left_diaphragm",
    "right_diaphragm",
    "diaphragm_unspec",
    "retrocardiac",
    "lower_left_lobe",
    "upper_left_lobe",
    "lower_right_lobe",
    "middle_right_lobe",
    "upper_right_lobe",
    "left_lower_lung",
    "left_mid_lung",
    "left_upper_lung",
    "left_apical_lung",
    "left_lung_unspec",
    "right_lower_lung",
    "right_mid_lung",
    "right_upper_lung",
    "right_apical_lung",
    "right_lung_unspec",
    "lung_apices",
    "lung_bases",
    "left_costophrenic",
    "right_costophrenic",
    "costophrenic_unspec",
    "cardiophrenic_sulcus",
    "mediastinal",
    "spine",
    "clavicle",
    "rib",
    "stomach",
    "right_atrium",
    "right_ventricle",
    "aorta",
    "svc",
    "interstitium",
    "parenchymal",
    "cavoatrial_junction",
    "cardiopulmonary",
    "pulmonary",
    "lung_volumes",
    # The observation's sentence named no anatomy.
    "unspecified",
    # The sentence named an anatomy that no rule maps to a landmark.
    "other",
)

UNSPECIFIED_POSITION = "unspecified"
OTHER_POSITION = "other"

# The knowledge book. Sentences avoid internal abbreviations with full stops ("e.g.") so that a sentence count is a
# plain split on terminal punctuation.
DESCRIPTIONS: dict[str, str] = {
    "normal": (
        "Normal is a report term stating that a structure such as the heart, lungs or mediastinum looks as expected in "
        "a healthy adult. On a frontal chest radiograph this means clear lungs, a normal-sized cardiac silhouette, a "
        "central trachea and sharp costophrenic angles."
    ),
    "clear": (
        "Clear describes lungs or pleural spaces that contain no abnormal opacity, fluid or air. Clear lungs on a "
        "frontal radiograph are evenly dark and well aerated, with vessels tapering normally toward the periphery."
    ),
    "sharp": (
        "Sharp describes a crisp, well-defined margin, most often of the costophrenic angles, hemidiaphragms or heart "
        "borders. A sharp, acute costophrenic angle on a frontal radiograph argues against pleural fluid or thickening "
        "at that site."
    ),
    "sharply": (
        "Sharply appears in phrases such as sharply defined or sharply marginated, meaning a contour or lesion edge is "
        "crisp. A sharply outlined hemidiaphragm or heart border shows that no adjacent consolidation, collapse or "
        "fluid is blurring it."
    ),
    "unremarkable": (
        "Unremarkable means a structure shows nothing of note and is applied to the osseous structures, mediastinum, "
        "soft tissues or cardiomediastinal silhouette. It is a statement of normality rather than a finding with its "
        "own radiographic appearance."
    ),
    "intact": (
        "Intact is used mainly for bones and implanted material: the ribs, clavicles or spine show no fracture, or "
        "sternal wires and leads are continuous. On the radiograph the cortical outlines and metallic components are "
        "smooth and unbroken."
    ),
    "stable": (
        "Stable means a finding, device position or contour has not changed compared with a prior radiograph, such as "
        "a stable nodule or stable cardiomegaly. It describes comparison over time rather than a specific appearance."
    ),
    "free": (
        "Free is used when a space or structure is free of disease, as in costophrenic angles that are free, meaning "
        "no pleural fluid, or lungs free of focal consolidation. It signals the absence of an abnormality at the named "
        "site."
    ),
    "effusion": (
        "A pleural effusion is an abnormal collection of fluid in the pleural space between the lung and the chest "
        "wall. On a frontal radiograph it blunts the costophrenic angle and forms a dense basal opacity with a "
        "meniscus curving up the lateral chest wall; a large one pushes the mediastinum away."
    ),
    "opacity": (
        "An opacity is any area that looks whiter than expected because it absorbs more X-rays than aerated lung. The "
        "term is deliberately nonspecific: an opacity may be focal or diffuse, hazy or dense, and may reflect fluid, "
        "infection, collapse, tumor or scarring."
    ),
    "pneumothorax": (
        "A pneumothorax is air in the pleural space that lets the lung fall away from the chest wall. A frontal "
        "radiograph shows a thin white visceral pleural line with no lung markings beyond it, usually at the apex when "
        "upright; tension causes mediastinal shift away from the affected side."
    ),
    "edema": (
        "Pulmonary edema is excess fluid in the lung interstitium and air spaces, most often from left heart failure "
        "or fluid overload. Radiographs show indistinct vessels, peribronchial cuffing and Kerley B lines, progressing "
        "to bilateral perihilar airspace opacities in a bat-wing pattern."
    ),
    "atelectasis": (
        "Atelectasis is incomplete expansion of part of a lung with loss of volume. It appears as a linear, plate-like "
        "or wedge-shaped opacity, often at the bases, with signs of volume loss such as a displaced fissure, an "
        "elevated hemidiaphragm or mediastinal shift toward it."
    ),
    "tube": (
        "Tube covers support tubes such as endotracheal, tracheostomy, nasogastric or orogastric, feeding and chest "
        "tubes. They appear as radiopaque tubular lines, often with a marker stripe, and reports state whether the tip "
        "lies in a safe position."
    ),
    "consolidation": (
        "Consolidation is replacement of alveolar air by fluid, pus, blood or cells so that the lung becomes solid. It "
        "appears as a homogeneous opacity that hides the vessels, often contains air bronchograms, and erases an "
        "adjacent heart or diaphragm border."
    ),
    "process": (
        "Process in chest radiograph reports usually means an airspace or cardiopulmonary process, a noncommittal term "
        "for air spaces filled by infection, edema or hemorrhage. It is most often used in negated form, as in no "
        "acute cardiopulmonary process."
    ),
    "abnormality": (
        "Abnormality is a generic term for any departure from the expected appearance, such as an unexplained opacity, "
        "lucency or contour change. It does not name a cause and is usually qualified by site, as in a focal or "
        "osseous abnormality."
    ),
    "enlarge": (
        "Enlarge describes a structure that is bigger than normal, most often the cardiac silhouette, hila, "
        "mediastinum, pulmonary arteries or lymph nodes. On a frontal radiograph the affected contour is widened or "
        "bulges beyond its usual boundary."
    ),
    "tip": (
        "Tip refers to where the distal end of a tube, line or catheter lies, reported against landmarks such as the "
        "carina, the cavoatrial junction or the stomach. A correctly placed tip, such as an endotracheal tube tip a "
        "few centimeters above the carina, is needed for safe device function."
    ),
    "low": (
        "Low most often describes low lung volumes from a shallow inspiration, which crowd the bronchovascular "
        "markings and make the heart look larger. It can also describe a device that sits too low, such as an "
        "endotracheal tube tip close to the carina."
    ),
    "pneumonia": (
        "Pneumonia is infection of the lung parenchyma that fills alveoli with inflammatory exudate. On a chest "
        "radiograph it appears as focal, lobar or patchy airspace opacity or consolidation, sometimes with air "
        "bronchograms and a parapneumonic effusion."
    ),
    "line": (
        "Line refers to vascular access lines such as central venous, internal jugular or subclavian lines and "
        "implanted ports. They appear as thin radiopaque tubes following the venous course, and reports give the tip "
        "position, ideally the lower superior vena cava or cavoatrial junction."
    ),
    "congestion": (
        "Pulmonary vascular congestion is distension of the pulmonary vessels from raised venous pressure, an early "
        "sign of heart failure or fluid overload. The vessels look enlarged and slightly indistinct, especially in the "
        "upper zones, without frank alveolar edema."
    ),
    "catheter": (
        "Catheter covers intravascular catheters such as central venous, hemodialysis and pulmonary artery (Swan-Ganz) "
        "catheters, and pigtail catheters. They appear as thin radiopaque tubes whose course and tip are reported; a "
        "pulmonary artery catheter tip should lie in a central pulmonary artery."
    ),
    "cardiomegaly": (
        "Cardiomegaly is enlargement of the heart from chamber dilation or wall hypertrophy, and a pericardial "
        "effusion can mimic it. On a frontal posteroanterior radiograph the cardiac silhouette is wider than half the "
        "internal thoracic diameter, a cardiothoracic ratio above 0.5."
    ),
    "fracture": (
        "A fracture is a break in a bone, on chest radiographs usually of the ribs, clavicles, scapulae or vertebral "
        "bodies. It appears as a lucent line, cortical step-off or angulation; healing fractures show callus and "
        "vertebral fractures show loss of height."
    ),
    "air": (
        "Air in reports usually means gas outside its normal place, such as free air under the diaphragm, subcutaneous "
        "emphysema or pneumomediastinum. It appears as abnormal dark lucency, for example a crescent beneath a "
        "hemidiaphragm or streaks dissecting through the soft tissues."
    ),
    "tortuous": (
        "Tortuous describes an elongated, curving vessel, usually the thoracic aorta in older or hypertensive "
        "patients. On a frontal radiograph the unfolded aorta gives a prominent aortic knob and a descending contour "
        "that bows laterally, which can mimic mediastinal widening."
    ),
    "lead": (
        "Lead refers to the wires of a pacemaker or implantable cardioverter-defibrillator that run from the generator "
        "through the veins into the heart. They are thin metallic lines ending over the right atrium, right ventricle "
        "or coronary sinus, and reports check their position and continuity."
    ),
    "disease": (
        "Disease in chest radiograph reports is a broad term for a pathological process, most often airspace, "
        "interstitial or obstructive lung disease. It has no single appearance and is usually qualified, as in no "
        "acute airspace disease."
    ),
    "calcification": (
        "Calcification is calcium deposited in tissue, seen as very dense, bright white foci. Common sites on chest "
        "radiographs are the aortic arch, coronary arteries, healed granulomas, lymph nodes, pleural plaques and "
        "costal cartilages."
    ),
    "prominence": (
        "Prominence describes a structure that looks larger or more conspicuous than usual without being clearly "
        "abnormal, such as prominent hila, pulmonary vessels or interstitial markings. It often signals mild vascular "
        "engorgement or an equivocal finding."
    ),
    "device": (
        "Device is a general term for medical equipment other than a named tube, line or pacemaker, such as a loop "
        "recorder, ventricular assist device, intra-aortic balloon pump, prosthetic valve or external monitoring "
        "leads. These appear as radiopaque objects projecting over the chest."
    ),
    "engorgement": (
        "Engorgement is distension of blood vessels, typically the pulmonary vessels or hila, from raised venous "
        "pressure or increased blood volume. The vessels appear enlarged and their margins may blur, often before "
        "interstitial edema develops."
    ),
    "picc": (
        "A PICC, a peripherally inserted central catheter, is placed through an arm vein and advanced centrally. On a "
        "chest radiograph it is a thin radiopaque line running over the arm and shoulder, with its tip ideally in the "
        "lower superior vena cava near the cavoatrial junction."
    ),
    "clip": (
        "Clips are small metallic surgical clips left after operations such as cholecystectomy, thyroidectomy, "
        "axillary node dissection or coronary bypass grafting. They appear as tiny, sharply defined radiopaque linear "
        "or V-shaped densities and are usually incidental."
    ),
    "elevation": (
        "Elevation most often refers to a hemidiaphragm lying higher than expected, from volume loss, phrenic nerve "
        "palsy, eventration or a process below the diaphragm. On a frontal radiograph the affected dome projects "
        "abnormally high, whereas normally the right dome is only slightly above the left."
    ),
    "expand": (
        "Expand usually refers to re-expansion of a lung after a pneumothorax is drained or atelectasis resolves, or "
        "to how fully the lungs inflate. Improved expansion appears as a larger aerated lung with the visceral pleural "
        "line back against the chest wall."
    ),
    "nodule": (
        "A pulmonary nodule is a rounded opacity up to 3 cm across. It may be solitary or multiple, smooth, lobulated "
        "or spiculated, and calcified or not; causes range from healed granulomas and benign tumors to primary or "
        "metastatic cancer."
    ),
    "wire": (
        "Wire refers to metallic wires, most often median sternotomy cerclage wires after cardiac surgery, and also "
        "pacing, guide or fixation wires. Sternal wires appear as a vertical row of dense twisted loops in the "
        "midline, and reports note whether they are intact."
    ),
    "fluid": (
        "Fluid refers to abnormal liquid in the chest outside a named effusion, such as fluid in a fissure, a "
        "loculated collection or fluid overload. It appears as a homogeneous water-density opacity whose shape depends "
        "on where it collects and on patient position."
    ),
    "degenerative": (
        "Degenerative changes are wear-related changes of the skeleton, most commonly spondylosis of the thoracic "
        "spine and osteoarthritis of the shoulder or acromioclavicular joints. They appear as osteophytes, joint space "
        "narrowing and endplate sclerosis and are usually incidental."
    ),
    "pacemaker": (
        "A pacemaker or implantable cardioverter-defibrillator is a generator, usually in the left upper chest wall, "
        "with leads into the heart. It appears as a dense metallic box with wires ending over the right atrium and "
        "ventricle; defibrillator leads carry thick shocking coils."
    ),
    "thicken": (
        "Thickening describes abnormal thickness of a structure, most often the pleura, the bronchial walls or the "
        "interlobular septa. Pleural thickening appears as a smooth or nodular soft-tissue band along the chest wall "
        "or apex, and bronchial wall thickening as peribronchial cuffing."
    ),
    "marking": (
        "Markings are the branching linear shadows of the pulmonary vessels and interstitium. Reports call them "
        "increased, prominent or coarse when edema, inflammation or fibrosis thickens the interstitium, and absent "
        "beyond the edge of a pneumothorax."
    ),
    "scar": (
        "A scar is fibrous tissue left by earlier injury such as infection, infarction, radiation or surgery. It "
        "appears as a linear or irregular band-like opacity, often with local volume loss, and stays unchanged over "
        "time."
    ),
    "hyperinflate": (
        "Hyperinflation means the lungs hold more air than normal, typical of emphysema, chronic obstructive pulmonary "
        "disease or asthma. On a frontal radiograph the hemidiaphragms are low and flattened, more than ten posterior "
        "ribs project above them, and the lungs look hyperlucent."
    ),
    "blunt": (
        "Blunting is loss of the normally sharp, acute costophrenic angle. A rounded or shallow angle on a frontal "
        "radiograph indicates a small pleural effusion or pleural thickening; roughly 200 mL or more of fluid is "
        "needed to blunt the lateral angle on an upright film."
    ),
    "loss": (
        "Loss usually refers to volume loss of a lung or lobe, as in atelectasis or collapse, or to loss of a normal "
        "contour such as a hemidiaphragm or heart border. Volume loss shows as displaced fissures, an elevated "
        "hemidiaphragm and shift of the mediastinum toward the affected side."
    ),
    "widen": (
        "Widening describes a structure broader than normal, most often the mediastinum, from vascular injury, "
        "hemorrhage, lymphadenopathy, tumor or simply a supine projection. On a frontal radiograph the mediastinal "
        "silhouette is broad, typically over 8 cm at the level of the aortic knob."
    ),
    "collapse": (
        "Collapse is complete or near-complete airlessness of a lobe or whole lung, the severe end of atelectasis. A "
        "collapsed lobe forms a dense opacity bounded by displaced fissures, and total lung collapse whitens the "
        "hemithorax with mediastinal shift toward it."
    ),
    "density": (
        "Density is an area of increased attenuation, used much like opacity for a focus that looks whiter than the "
        "surrounding lung or soft tissue. It is nonspecific and may represent consolidation, atelectasis, a mass or "
        "overlapping structures."
    ),
    "emphysema": (
        "Emphysema is permanent enlargement of the air spaces beyond the terminal bronchioles with destruction of "
        "their walls, usually from smoking. On a chest radiograph it causes hyperinflation, flattened hemidiaphragms, "
        "hyperlucent lungs with sparse vessels and sometimes bullae."
    ),
    "aerate": (
        "Aeration describes how well the lungs are filled with air. Well-aerated lungs are uniformly dark with clearly "
        "seen vessels, whereas poorly aerated regions look hazy or dense from atelectasis, edema or consolidation."
    ),
    "mass": (
        "A mass is a focal lung, mediastinal or pleural opacity larger than 3 cm, with a higher chance of malignancy "
        "than a nodule. It may have lobulated or spiculated margins, cavitate, or cause post-obstructive collapse and "
        "hilar or mediastinal widening."
    ),
    "crowd": (
        "Crowding describes bronchovascular markings or ribs lying closer together than normal. It usually reflects "
        "low lung volumes or volume loss and can mimic increased interstitial markings at the lung bases."
    ),
    "infiltrate": (
        "Infiltrate is an older, nonspecific term for material filling the lung air spaces or interstitium, such as "
        "infection, edema, blood or cells. It appears as patchy, ill-defined opacity and is often used to suggest "
        "pneumonia."
    ),
    "obscure": (
        "Obscure describes a normal contour that can no longer be seen because the lung next to it has lost its air, "
        "the silhouette sign. An obscured right heart border suggests right middle lobe disease, and an obscured "
        "hemidiaphragm suggests lower lobe disease or effusion."
    ),
    "deformity": (
        "Deformity is an abnormal shape of a bone or of the chest wall, such as an old healed rib fracture, a "
        "vertebral compression deformity, pectus excavatum or post-surgical change. It appears as an altered contour, "
        "angulation or loss of height."
    ),
    "hernia": (
        "A hernia in chest radiograph reports is usually a hiatal hernia, where part of the stomach slides through the "
        "esophageal hiatus into the chest. It appears as a rounded retrocardiac soft-tissue density, often containing "
        "an air-fluid level."
    ),
    "drainage": (
        "Drainage refers to a drain, such as a chest drain or pigtail catheter placed to remove air, fluid or pus, or "
        "to the result of draining. Radiographs show the drain and, afterwards, a smaller pneumothorax or effusion."
    ),
    "distention": (
        "Distention means a hollow structure is abnormally expanded by gas or fluid, most often the stomach or bowel "
        "loops visible below the diaphragm. On a chest radiograph a distended stomach appears as a large gas-filled "
        "bubble beneath the left hemidiaphragm."
    ),
    "shift": (
        "Shift refers to displacement of the mediastinum, trachea or heart from its normal midline position. It moves "
        "away from a large effusion, tension pneumothorax or mass, and toward a collapsed or shrunken lung."
    ),
    "stent": (
        "A stent is a tubular metal mesh placed to keep a lumen open, in the coronary arteries, airway, esophagus or "
        "aorta as an endograft. It appears as a fine radiopaque cylindrical lattice along the course of the treated "
        "structure."
    ),
    "pressure": (
        "Pressure usually refers to elevated pulmonary venous pressure from left heart failure or volume overload. "
        "Radiographic clues include upper zone vascular redistribution, indistinct vessels and, at higher pressures, "
        "interstitial and alveolar edema."
    ),
    "lesion": (
        "Lesion is a broad term for any focal area of abnormal tissue, such as a nodule, mass, cavity, metastasis, or "
        "a lytic or sclerotic bone lesion. Its appearance depends on the cause, and reports usually describe its size, "
        "margin and density."
    ),
    "finding": (
        "Finding is a neutral word for any observation in the image, used in phrases such as no acute findings or "
        "findings concerning for pneumonia. It has no specific radiographic appearance on its own."
    ),
    "borderline": (
        "Borderline most often describes heart size at the upper limit of normal, or any equivocal finding. A "
        "borderline cardiac silhouette has a cardiothoracic ratio close to one half, where neither cardiomegaly nor "
        "normal size can be called with confidence."
    ),
    "hardware": (
        "Hardware refers to orthopedic or surgical metal such as spinal fusion rods and screws, fixation plates, "
        "shoulder prostheses or vertebroplasty cement. It appears as very dense, sharply marginated metallic material "
        "over the spine, ribs or shoulders."
    ),
    "dilation": (
        "Dilation is abnormal widening of a tubular structure or chamber, such as the aorta, pulmonary arteries, "
        "esophagus, bowel or a cardiac chamber. On a radiograph it shows as an enlarged vascular or cardiac contour or "
        "a gas-distended lumen."
    ),
    "chf": (
        "CHF, congestive heart failure, is inadequate cardiac pumping with fluid backing up into the lungs. "
        "Radiographs show cardiomegaly, upper zone vascular redistribution, interstitial edema with Kerley B lines and "
        "often bilateral pleural effusions."
    ),
    "redistribution": (
        "Redistribution, or cephalization, means the upper lobe pulmonary vessels become as large as or larger than "
        "the lower lobe vessels. On an upright radiograph it is an early sign of raised pulmonary venous pressure in "
        "congestive heart failure."
    ),
    "aspiration": (
        "Aspiration is inhalation of gastric contents, food, fluid or foreign material into the airways and lungs. It "
        "produces airspace opacities in dependent segments, typically the right lower lobe or posterior segments, and "
        "can progress to aspiration pneumonia."
    ),
    "tail_abnorm_obs": (
        "A grouped class for abnormal observations too rare in reports to have their own entity, such as fibrosis, "
        "kyphosis, granuloma or bronchiectasis. Their radiographic appearances vary widely."
    ),
    "excluded_obs": (
        "A grouped class for report words that describe change, size, severity or clinical context rather than a "
        "visual finding, such as unchanged, small, new or postoperative. They have no specific radiographic "
        "appearance."
    ),
}

# Surface phrases per entity, lower case. Rules behind the choices:
# - Every lemma of MedKLIP's manual normalisation table (reference/medklip.md section 3) lands on the same entity
#   here; lemmas that the table sends outside the 75 (fibrosis, haziness, kyphosis, deviation, elongation) are listed
#   under tail_abnorm_obs, as MedKLIP groups them.
# - A multi-word phrase is listed only when it means something other than its words would give separately:
#   "pleural fluid" is effusion (not fluid), "free air" is air (not the normal 'free'), "borderline cardiomegaly" is
#   borderline, "pericardial effusion" is not a pleural effusion. Otherwise each word is matched on its own, so
#   "aspiration pneumonia" yields both aspiration and pneumonia.
# - "air space ..." phrases exist so that "air space disease" is not read as abnormal air.
# - excluded_obs has no phrases: its lemmas ("small", "new", "mild") mostly modify other findings, and RadGraph-based
#   labels drop them when they only modify, so matching them as words would mark nearly every report.
# fmt: off
SYNONYMS: dict[str, tuple[str, ...]] = {
    "normal": ("normal", "normally", "within normal limits"),
    "clear": ("clear",),
    "sharp": ("sharp",),
    "sharply": ("sharply",),
    "unremarkable": ("unremarkable",),
    "intact": ("intact",),
    "stable": ("stable", "stably"),
    "free": ("free",),
    "effusion": (
        "effusion", "effusions", "pleural effusion", "pleural effusions", "pleural fluid", "hydrothorax", "hemothorax",
        "empyema",
    ),
    "opacity": (
        "opacity", "opacities", "opacification", "opacifications", "opacified", "opacify", "opacifies", "opacifying",
        "air space opacity", "air space opacities", "air space opacification", "air-space opacity",
        "air-space opacities",
    ),
    "pneumothorax": (
        "pneumothorax", "pneumothoraces", "pneumothorace", "hydropneumothorax", "hydropneumothoraces", "ptx",
        "pleural line", "visceral pleural line",
    ),
    "edema": (
        "edema", "oedema", "edematous", "pulmonary edema", "kerley b lines", "kerley b-lines", "kerley b line",
        "kerley lines", "septal lines",
    ),
    "atelectasis": ("atelectasis", "atelectases", "atelectase", "atelectatic"),
    "tube": (
        "tube", "tubes", "endotracheal tube", "endotracheal tubes", "et tube", "ett", "ng tube", "nasogastric tube",
        "og tube", "orogastric tube", "enteric tube", "feeding tube", "nasoenteric tube", "dobhoff", "dobhoff tube",
        "chest tube", "chest tubes", "thoracostomy tube", "tracheostomy", "tracheostomy tube", "trach", "trach tube",
        "gastrostomy tube", "g-tube", "intubated",
    ),
    "consolidation": (
        "consolidation", "consolidations", "consolidative", "consolidate", "consolidated", "consolidating",
        "air bronchogram", "air bronchograms", "air space consolidation", "air-space consolidation",
    ),
    "process": ("process", "processes", "air space process", "air-space process"),
    "abnormality": ("abnormality", "abnormalities", "abnormal", "abnormally"),
    "enlarge": (
        "enlarge", "enlarged", "enlarges", "enlarging", "enlargement", "enlargements", "increase in size",
        "increased in size", "increasing in size",
    ),
    "tip": ("tip", "tips"),
    "low": ("low", "low-lying", "low lying"),
    "pneumonia": (
        "pneumonia", "pneumonias", "pneumonic", "bronchopneumonia", "pna", "infection", "infections", "infectious",
        "infectious process", "infectious processes",
    ),
    "line": (
        "line", "lines", "central line", "central lines", "central venous line", "ij line", "internal jugular line",
        "subclavian line", "port", "ports", "port-a-cath", "portacath", "mediport",
    ),
    "congestion": (
        "congestion", "congested", "vascular congestion", "pulmonary vascular congestion", "venous congestion",
    ),
    "catheter": (
        "catheter", "catheters", "central venous catheter", "cvc", "swan-ganz catheter", "swan-ganz", "swan ganz",
        "swan", "pulmonary artery catheter", "pa catheter", "dialysis catheter", "hemodialysis catheter",
        "pigtail catheter", "introducer", "introducer sheath", "sheath", "cordis",
    ),
    "cardiomegaly": (
        "cardiomegaly", "cardiac enlargement", "enlarged heart", "enlarged heart size", "enlarged cardiac silhouette",
        "enlargement of the cardiac silhouette", "enlargement of the heart", "heart is enlarged",
        "heart is mildly enlarged", "heart is moderately enlarged", "heart is markedly enlarged",
        "heart is severely enlarged", "heart size is enlarged", "heart size is mildly enlarged",
        "heart size is moderately enlarged", "heart size is markedly enlarged", "cardiac silhouette is enlarged",
        "cardiac silhouette is mildly enlarged", "cardiac silhouette is moderately enlarged",
        "cardiac silhouette is markedly enlarged", "increased heart size", "heart size is increased",
        "increased cardiac size",
    ),
    "fracture": ("fracture", "fractures", "fractured", "fx"),
    "air": (
        "air", "free air", "free gas", "free intraperitoneal air", "free subdiaphragmatic air",
        "subdiaphragmatic free air", "intraperitoneal free air", "pneumoperitoneum", "subcutaneous air",
        "subcutaneous emphysema", "soft tissue emphysema", "surgical emphysema", "mediastinal emphysema",
        "pneumomediastinum", "pneumopericardium", "air-fluid level", "air-fluid levels", "air fluid level",
        "air fluid levels",
    ),
    "tortuous": ("tortuous", "tortuosity", "unfolded", "unfolding"),
    "lead": ("lead", "leads", "pacing lead", "pacing leads"),
    "disease": ("disease", "diseases", "air space disease", "air-space disease"),
    "calcification": ("calcification", "calcifications", "calcified", "calcify", "calcific"),
    "prominence": ("prominence", "prominences", "prominent", "prominently"),
    "device": (
        "device", "devices", "loop recorder", "lvad", "iabp", "intra-aortic balloon pump", "balloon pump", "impella",
        "stimulator", "neurostimulator", "defibrillator pad", "defibrillator pads", "prosthetic valve",
        "prosthetic valves", "valve prosthesis", "annuloplasty ring", "ecg lead", "ecg leads", "ekg lead", "ekg leads",
        "monitoring leads", "telemetry leads", "ecg electrodes", "ekg electrodes",
    ),
    "engorgement": ("engorgement", "engorged", "engorge", "engorging"),
    "picc": (
        "picc", "piccs", "picc line", "picc lines", "picc catheter", "peripherally inserted central catheter",
        "peripherally inserted central venous catheter",
    ),
    "clip": ("clip", "clips"),
    "elevation": ("elevation", "elevated", "elevate", "elevates"),
    "expand": (
        "expand", "expands", "expanded", "expanding", "expansion", "re-expansion", "reexpansion", "re-expanded",
        "reexpanded", "re-expand", "reexpand",
    ),
    "nodule": ("nodule", "nodules", "nodular", "nodularity", "micronodule", "micronodules", "micronodular"),
    "wire": ("wire", "wires", "guidewire", "guidewires"),
    "fluid": ("fluid", "fluids", "fluid collection", "fluid collections", "fluid overload", "volume overload"),
    "degenerative": (
        "degenerative", "degenerate", "degeneration", "degenerative change", "degenerative changes",
        "degenerative disease", "degenerative joint disease", "degenerative disc disease", "djd", "spondylosis",
        "spondylotic", "osteophyte", "osteophytes", "osteophytosis", "osteoarthritis", "arthritis", "arthritic",
    ),
    "pacemaker": (
        "pacemaker", "pacemakers", "pacer", "pacers", "icd", "icds", "aicd", "aicds", "pacemaker/icd", "pacemaker/aicd",
        "pacemaker/defibrillator", "pacemaker-defibrillator", "defibrillator", "pacing device",
    ),
    "thicken": ("thicken", "thickens", "thickened", "thickening", "thickenings", "peribronchial cuffing", "cuffing"),
    "marking": ("marking", "markings", "reticulation", "reticular", "reticulonodular"),
    "scar": ("scar", "scars", "scarring", "scarred"),
    "hyperinflate": (
        "hyperinflate", "hyperinflated", "hyperinflation", "hyper-inflated", "hyper-inflation", "hyperexpanded",
        "hyperexpansion", "hyper-expanded", "hyper-expansion", "overinflated", "overinflation", "over-inflated",
        "over-inflation", "flattened diaphragms", "flattened hemidiaphragms", "flattening of the diaphragms",
        "flattening of the hemidiaphragms",
    ),
    "blunt": ("blunt", "blunts", "blunted", "blunting"),
    "loss": ("loss", "volume loss", "loss of volume", "loss of lung volume"),
    "widen": ("widen", "widens", "widened", "widening", "wide", "wider"),
    "collapse": ("collapse", "collapses", "collapsed", "collapsing"),
    "density": ("density", "densities"),
    "emphysema": (
        "emphysema", "emphysematous", "bulla", "bullae", "bullous", "copd", "chronic obstructive pulmonary disease",
        "chronic obstructive lung disease",
    ),
    "aerate": (
        "aerate", "aerated", "aerating", "aeration", "hypoaerated", "hypoaeration", "underaerated", "underaeration",
    ),
    "mass": (
        "mass", "masses", "masse", "masslike", "mass-like", "tumor", "tumors", "tumour", "tumours", "neoplasm",
        "neoplasms",
    ),
    "crowd": ("crowd", "crowds", "crowded", "crowding"),
    "infiltrate": ("infiltrate", "infiltrates", "infiltrated", "infiltration", "infiltrations", "infiltrative"),
    "obscure": (
        "obscure", "obscures", "obscured", "obscuring", "obscuration", "silhouetting", "silhouette sign", "effaced",
        "effacement", "effacing",
    ),
    "deformity": ("deformity", "deformities", "deformed", "pectus excavatum", "pectus carinatum"),
    "hernia": ("hernia", "hernias", "herniation", "herniated", "hiatal hernia"),
    "drainage": ("drainage", "drain", "drains", "drained", "draining", "chest drain", "pigtail drain"),
    "distention": ("distention", "distension", "distend", "distends", "distended", "distending"),
    "shift": ("shift", "shifts", "shifted", "shifting"),
    "stent": ("stent", "stents", "stented", "stent graft", "endograft"),
    "pressure": (
        "pressure", "pressures", "elevated pulmonary venous pressure", "elevated pulmonary venous pressures",
        "elevated venous pressure", "elevated venous pressures", "increased pulmonary venous pressure",
        "pulmonary venous hypertension",
    ),
    "lesion": ("lesion", "lesions", "metastasis", "metastases", "metastatic disease"),
    "finding": ("finding", "findings"),
    "borderline": (
        "borderline", "borderline cardiomegaly", "borderline enlarged", "borderline enlargement",
        "upper limits of normal", "upper limit of normal", "upper normal", "upper-normal", "top normal", "top-normal",
        "high normal", "high-normal",
    ),
    "hardware": (
        "hardware", "screw", "screws", "rod", "rods", "fixation", "prosthesis", "prostheses", "arthroplasty",
        "vertebroplasty", "kyphoplasty",
    ),
    "dilation": (
        "dilation", "dilations", "dilatation", "dilatations", "dilate", "dilates", "dilated", "dilating", "ectasia",
        "ectatic", "aneurysm", "aneurysms", "aneurysmal",
    ),
    "chf": (
        "chf", "congestive heart failure", "congestive failure", "heart failure", "cardiac failure",
        "left heart failure", "left ventricular failure", "cardiac decompensation",
    ),
    "redistribution": ("redistribution", "redistributed", "cephalization", "cephalisation", "cephalized"),
    "aspiration": ("aspiration", "aspirations", "aspirate", "aspirated"),
    "tail_abnorm_obs": (
        "fibrosis", "fibrotic", "haziness", "hazy", "haze", "kyphosis", "kyphotic", "scoliosis", "scoliotic",
        "deviation", "deviate", "deviated", "elongation", "elongate", "elongated", "granuloma", "granulomas",
        "granulomatous", "bronchiectasis", "cavitation", "cavitary", "cavity", "lymphadenopathy", "adenopathy",
        "pneumonitis", "pericardial effusion", "pericardial effusions", "hematoma", "pulmonary hypertension",
        "pulmonary arterial hypertension", "lucency", "lucencies", "hyperlucency", "atherosclerosis", "atherosclerotic",
        "osteopenia", "osteopenic", "plaque", "plaques", "sarcoidosis", "tuberculosis", "malignancy", "carcinoma",
        "cancer", "goiter", "bronchitis",
    ),
    "excluded_obs": (),
}
# fmt: on

POSITION_PROMPTS: dict[str, str] = {
    "trachea": "It is located at the trachea.",
    "left_hilar": "It is located at the left hilum.",
    "right_hilar": "It is located at the right hilum.",
    "hilar_unspec": "It is located at the hila.",
    "left_pleural": "It is located in the left pleural space.",
    "right_pleural": "It is located in the right pleural space.",
    "pleural_unspec": "It is located in the pleural space.",
    "heart_size": "It concerns the size of the heart and cardiac silhouette.",
    "heart_border": "It is located at the heart border.",
    "left_diaphragm": "It is located at the left hemidiaphragm.",
    "right_diaphragm": "It is located at the right hemidiaphragm.",
    "diaphragm_unspec": "It is located at the diaphragm.",
    "retrocardiac": "It is located in the retrocardiac region behind the heart.",
    "lower_left_lobe": "It is located in the left lower lobe.",
    "upper_left_lobe": "It is located in the left upper lobe or lingula.",
    "lower_right_lobe": "It is located in the right lower lobe.",
    "middle_right_lobe": "It is located in the right middle lobe.",
    "upper_right_lobe": "It is located in the right upper lobe.",
    "left_lower_lung": "It is located at the left lower lung zone.",
    "left_mid_lung": "It is located at the left mid lung zone.",
    "left_upper_lung": "It is located at the left upper lung zone.",
    "left_apical_lung": "It is located at the left lung apex.",
    "left_lung_unspec": "It is located in the left lung.",
    "right_lower_lung": "It is located at the right lower lung zone.",
    "right_mid_lung": "It is located at the right mid lung zone.",
    "right_upper_lung": "It is located at the right upper lung zone.",
    "right_apical_lung": "It is located at the right lung apex.",
    "right_lung_unspec": "It is located in the right lung.",
    "lung_apices": "It is located at both lung apices.",
    "lung_bases": "It is located at both lung bases.",
    "left_costophrenic": "It is located at the left costophrenic angle.",
    "right_costophrenic": "It is located at the right costophrenic angle.",
    "costophrenic_unspec": "It is located at the costophrenic angles.",
    "cardiophrenic_sulcus": "It is located at the cardiophrenic angle.",
    "mediastinal": "It is located in the mediastinum.",
    "spine": "It is located at the spine.",
    "clavicle": "It is located at the clavicle.",
    "rib": "It is located at the ribs.",
    "stomach": "It is located in the stomach or upper abdomen.",
    "right_atrium": "It is located in the right atrium.",
    "right_ventricle": "It is located in the right ventricle.",
    "aorta": "It is located at the aorta.",
    "svc": "It is located in the superior vena cava.",
    "interstitium": "It is located in the lung interstitium.",
    "parenchymal": "It is located in the lung parenchyma.",
    "cavoatrial_junction": "It is located at the cavoatrial junction.",
    "cardiopulmonary": "It involves the heart and lungs together.",
    "pulmonary": "It involves the lungs and pulmonary vessels.",
    "lung_volumes": "It involves both lungs as a whole, including the lung volumes.",
    "unspecified": "Its location is not specified.",
    "other": "It is located at another anatomical site.",
}

# Anatomy phrases per position, lower case. Mostly AGXNet's DICT_ANATOMICAL_LANDMARKS (first matching rule wins),
# spelled out as surface text, with these consequences worth knowing:
# - a bare side ("left", "right-sided") is no anatomy by itself: the extractor sends it to the finding's default site
#   (left_pleural for an effusion, left_lung_unspec for an opacity; docs/extraction.md). "left hemithorax" is
#   left_lung_unspec, since AGXNet's pleural rules need the word "pleural";
# - bare "lung"/"lungs" name no position ("the lungs are clear" is unspecified); "lower lobes"/"lower lungs" are
#   lung_bases and "upper lungs" are lung_apices;
# - "perihilar" and "infrahilar" are hilar; "lingula" is the left upper lobe; "cardiomediastinal" is mediastinal;
#   "abdomen" is stomach; "left ventricle"/"left atrium" are claimed by heart_size so their "left" is not read as
#   the left lung.
# Additions beyond AGXNet, where the meaning is unambiguous: "carina", "superior vena cava", "parenchyma", "fissure".
# 'unspecified' owns no phrases: it is what an extractor emits when a sentence names no anatomy. 'other' lists
# anatomy that no landmark covers (chest wall, shoulder, internal jugular vein), so that a longest-match scan of
# "left chest wall" or "right ij" lands on 'other' instead of falling through to the bare side.
# fmt: off
POSITION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "trachea": ("trachea", "tracheal", "carina", "carinal"),
    "left_hilar": ("left hilar", "left hilum", "left hilus", "left perihilar", "left infrahilar", "left hilar region"),
    "right_hilar": (
        "right hilar", "right hilum", "right hilus", "right perihilar", "right infrahilar", "right hilar region",
    ),
    "hilar_unspec": (
        "hilar", "hilum", "hila", "hilus", "perihilar", "infrahilar", "bihilar", "hilar regions", "perihilar regions",
    ),
    "left_pleural": ("left pleural", "left pleura", "left pleural space", "left pleural surface"),
    "right_pleural": ("right pleural", "right pleura", "right pleural space", "right pleural surface"),
    "pleural_unspec": (
        "pleural", "pleura", "pleural space", "pleural spaces", "pleural surfaces", "fissure",
        "fissures", "minor fissure", "major fissure", "horizontal fissure", "oblique fissure",
    ),
    "heart_size": (
        "heart", "heart size", "cardiac", "cardiac size", "cardiac silhouette", "cardiac contour", "cardiac contours",
        "heart contour", "heart shadow", "cardiac apex", "cardiothoracic ratio", "left ventricle", "left ventricular",
        "left atrium", "left atrial",
    ),
    "heart_border": (
        "heart border", "heart borders", "cardiac border", "cardiac borders", "left heart border", "right heart border",
        "left cardiac border", "right cardiac border", "cardiac margin", "cardiac margins",
    ),
    "left_diaphragm": (
        "left hemidiaphragm", "left hemi-diaphragm", "left diaphragm", "left hemidiaphragmatic", "left diaphragmatic",
    ),
    "right_diaphragm": (
        "right hemidiaphragm", "right hemi-diaphragm", "right diaphragm", "right hemidiaphragmatic",
        "right diaphragmatic",
    ),
    "diaphragm_unspec": (
        "diaphragm", "diaphragms", "hemidiaphragm", "hemidiaphragms", "hemi-diaphragm", "hemi-diaphragms",
        "diaphragmatic", "hemidiaphragmatic",     ),
    "retrocardiac": ("retrocardiac", "retro-cardiac", "retrocardiac region", "behind the heart"),
    "lower_left_lobe": ("left lower lobe", "left lower lobar", "lll"),
    "upper_left_lobe": ("left upper lobe", "left upper lobar", "lul", "lingula", "lingular"),
    "lower_right_lobe": ("right lower lobe", "right lower lobar", "rll"),
    "middle_right_lobe": ("right middle lobe", "right middle lobar", "middle lobe", "rml"),
    "upper_right_lobe": ("right upper lobe", "right upper lobar", "rul"),
    "left_lower_lung": (
        "left lower lung", "left lower lung zone", "left lower zone", "left base", "left basilar", "left basal",
        "left lung base", "left lower hemithorax",
    ),
    "left_mid_lung": (
        "left mid lung", "left mid-lung", "left midlung", "left mid lung zone", "left mid zone", "left middle lung",
        "left mid hemithorax",
    ),
    "left_upper_lung": ("left upper lung", "left upper lung zone", "left upper zone", "left upper hemithorax"),
    "left_apical_lung": ("left apex", "left apical", "left lung apex", "left apicolateral", "left apical region"),
    "left_lung_unspec": ("left lung", "left hemithorax", "left lung field"),
    "right_lower_lung": (
        "right lower lung", "right lower lung zone", "right lower zone", "right base", "right basilar", "right basal",
        "right lung base", "right lower hemithorax",
    ),
    "right_mid_lung": (
        "right mid lung", "right mid-lung", "right midlung", "right mid lung zone", "right mid zone",
        "right middle lung", "right mid hemithorax",
    ),
    "right_upper_lung": ("right upper lung", "right upper lung zone", "right upper zone", "right upper hemithorax"),
    "right_apical_lung": ("right apex", "right apical", "right lung apex", "right apicolateral", "right apical region"),
    "right_lung_unspec": ("right lung", "right hemithorax", "right lung field"),
    "lung_apices": (
        "apices", "apical", "biapical", "lung apices", "lung apex", "both apices", "bilateral apices", "apical regions",
        "upper lungs", "upper lobes", "both upper lobes", "bilateral upper lobes", "upper lung zones", "upper zones",
    ),
    "lung_bases": (
        "bases", "lung bases", "lung base", "both bases", "bilateral bases", "bibasilar", "bibasal", "basilar", "basal",
        "lower lung", "lower lungs", "lower lobe", "lower lobes", "both lower lobes", "bilateral lower lobes",
        "lower lung zones", "lower zones",
    ),
    "left_costophrenic": (
        "left costophrenic", "left costophrenic angle", "left costophrenic sulcus", "left costophrenic recess",
        "left cp angle",
    ),
    "right_costophrenic": (
        "right costophrenic", "right costophrenic angle", "right costophrenic sulcus", "right costophrenic recess",
        "right cp angle",
    ),
    "costophrenic_unspec": (
        "costophrenic", "costophrenic angle", "costophrenic angles", "costophrenic sulcus", "costophrenic sulci",
        "costophrenic recesses", "cp angle", "cp angles", "costodiaphragmatic",
    ),
    "cardiophrenic_sulcus": (
        "cardiophrenic", "cardiophrenic angle", "cardiophrenic angles", "cardiophrenic sulcus", "cardiophrenic region",
    ),
    "mediastinal": (
        "mediastinum", "mediastinal", "cardiomediastinal", "cardiomediastinum", "cardiomediastinal silhouette",
        "mediastinal contours", "superior mediastinum", "paratracheal", "aortopulmonary window",
    ),
    "spine": (
        "spine", "spinal", "thoracic spine", "lumbar spine", "cervical spine", "thoracolumbar", "vertebra", "vertebrae",
        "vertebral", "vertebral body", "vertebral bodies", "paraspinal",
    ),
    "clavicle": ("clavicle", "clavicles", "clavicular"),
    "rib": ("rib", "ribs", "costal"),
    "stomach": (
        "stomach", "gastric", "gastric fundus", "fundus", "abdomen", "abdominal", "upper abdomen",
        "gastroesophageal junction", "ge junction",
    ),
    "right_atrium": ("right atrium", "right atrial", "ra", "cavoatrial region"),
    "right_ventricle": ("right ventricle", "right ventricular", "rv"),
    "aorta": (
        "aorta", "aortic", "aortic arch", "aortic knob", "aortic knuckle", "thoracic aorta", "ascending aorta",
        "descending aorta",
    ),
    "svc": ("svc", "superior vena cava", "superior vena caval"),
    "interstitium": ("interstitium", "interstitial", "pulmonary interstitium"),
    "parenchymal": ("parenchyma", "parenchymal", "lung parenchyma", "pulmonary parenchyma"),
    "cavoatrial_junction": (
        "cavoatrial junction", "cavo-atrial junction", "cavoatrial", "cavo-atrial", "atriocaval junction",
        "caval-atrial junction",
    ),
    "cardiopulmonary": ("cardiopulmonary",),
    "pulmonary": (
        "pulmonary", "pulmonary vasculature", "pulmonary vascularity", "pulmonary vessels", "pulmonary artery",
        "pulmonary arteries",
    ),
    "lung_volumes": (
        "lung volumes", "lung volume", "volumes", "volume",
    ),
    "other": (
        "chest wall", "left chest wall", "right chest wall", "soft tissue", "soft tissues", "subcutaneous tissues",
        "shoulder", "shoulders", "left shoulder", "right shoulder", "humerus", "humeral", "humeral head", "scapula",
        "scapulae", "scapular", "sternum", "sternal", "neck", "axilla", "axillary", "left axilla", "right axilla",
        "breast", "breasts", "left breast", "right breast", "thyroid", "esophagus", "esophageal", "subclavian",
        "left subclavian", "right subclavian", "internal jugular", "left internal jugular", "right internal jugular",
        "ij", "left ij", "right ij", "brachiocephalic", "left brachiocephalic", "right brachiocephalic", "azygos",
        "inferior vena cava", "ivc", "osseous structures", "bony structures", "bones", "thoracic inlet", "bowel",
        "colon", "liver", "hiatal", "paraesophageal", "coronary", "coronary artery", "coronary arteries",
        "coronary sinus", "biliary", "upper extremity", "left upper extremity", "right upper extremity", "osseous",
        "bony",
    ),
}
# fmt: on

# Reverse lookups for extractors. Building them here, rather than in each caller, keeps one definition of ownership.
ENTITY_BY_PHRASE: dict[str, str] = {phrase: entity for entity, phrases in SYNONYMS.items() for phrase in phrases}
POSITION_BY_PHRASE: dict[str, str] = {
    phrase: position for position, phrases in POSITION_SYNONYMS.items() for phrase in phrases
}


def entity_index(name: str) -> int:
    """Index of an entity in `ENTITIES`, i.e. its column in label tensors.

    Args:
        name: Entity name exactly as in `ENTITIES`, e.g. "pneumonia".

    Returns:
        The 0-based index (pneumonia is 20).

    Raises:
        ValueError: If `name` is not one of the 75 entities; the message lists the valid names.
    """
    try:
        return ENTITIES.index(name)
    except ValueError:
        raise ValueError(f"unknown entity {name!r}; expected one of: {', '.join(ENTITIES)}") from None


def position_index(name: str) -> int:
    """Index of an anatomical position in `POSITIONS`, i.e. its row in the [51, 75] label matrix.

    Args:
        name: Position name exactly as in `POSITIONS`, e.g. "left_lower_lung".

    Returns:
        The 0-based index (unspecified is 49, other is 50).

    Raises:
        ValueError: If `name` is not one of the 51 positions; the message lists the valid names.
    """
    try:
        return POSITIONS.index(name)
    except ValueError:
        raise ValueError(f"unknown position {name!r}; expected one of: {', '.join(POSITIONS)}") from None


def seen_entities(exclude_unseen: bool) -> tuple[str, ...]:
    """Entities that take part in training, in `ENTITIES` order.

    MedKLIP's zero-shot ablation (`exclude_class: True`) drops `UNSEEN_ENTITIES` from both losses so they can be
    evaluated as never-seen diseases; its default trains on all 75.

    Args:
        exclude_unseen: If True, leave out the 7 `UNSEEN_ENTITIES` (68 remain); if False, return all 75.

    Returns:
        The entity names to train on.
    """
    if not exclude_unseen:
        return ENTITIES
    return tuple(entity for entity in ENTITIES if entity not in UNSEEN_ENTITIES)


def seen_entity_indices(exclude_unseen: bool) -> tuple[int, ...]:
    """Column indices of `seen_entities(exclude_unseen)`, MedKLIP's `keep_class_dim`.

    Args:
        exclude_unseen: As in `seen_entities`.

    Returns:
        Sorted indices into `ENTITIES` (68 of them when excluding, 75 otherwise).
    """
    return tuple(entity_index(entity) for entity in seen_entities(exclude_unseen))
