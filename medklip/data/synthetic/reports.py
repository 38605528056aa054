"""The report of a case: one statement per finding, normal statements and negations, and the truth rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from medklip.data.synthetic.case import Box, CaseSpec, Finding, TruthRow, pick

logger = logging.getLogger(__name__)


Row = tuple[str, str, int, tuple[int, str] | None]  # entity, position, existence, box key (finding index, part)


@dataclass
class _Statement:
    """One sentence (or two short ones) of a report and the rows it states."""

    text: str
    rows: list[Row]
    topic: str = ""  # report section ordering: device, lung, pleura, heart, bone, global


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class _Place:
    """How a report names a lung location: its position and the words for it."""

    position: str
    adjectives: tuple[str, ...]  # before the noun: "right lower lobe", "right basilar"
    phrases: tuple[str, ...]  # after the noun: "in the right lower lobe", "at the right base"


def _place(side: str, level: str, lobe: bool) -> _Place:
    """Position and wording of a lung location (MedKLIP / AGXNet anatomy rules, entities.POSITION_SYNONYMS)."""
    if level == "hilar":
        return _Place(f"{side}_hilar", (f"{side} hilar",), (f"in the {side} hilar region", f"at the {side} hilum"))
    if level == "apical":
        return _Place(f"{side}_apical_lung", (f"{side} apical",), (f"at the {side} apex",))
    if lobe:
        if level == "mid" and side == "right":
            return _Place("middle_right_lobe", ("right middle lobe",), ("in the right middle lobe",))
        if level == "mid":
            return _Place("upper_left_lobe", ("lingular",), ("in the lingula",))
        name = f"{side} {level} lobe"
        position = f"{level}_{side}_lobe"
        return _Place(position, (name,), (f"in the {name}", f"within the {name}"))
    if level == "upper":
        return _Place(
            f"{side}_upper_lung",
            (f"{side} upper lung",),
            (f"in the {side} upper lung", f"in the {side} upper lung zone"),
        )
    if level == "mid":
        return _Place(
            f"{side}_mid_lung", (f"{side} mid lung",), (f"in the {side} mid lung", f"in the {side} mid lung zone")
        )
    return _Place(
        f"{side}_lower_lung",
        (f"{side} basilar", f"{side} lower lung"),
        (f"at the {side} base", f"at the {side} lung base", f"in the {side} lower lung"),
    )


_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}

_OTHER_SIDE = {"right": "left", "left": "right"}


def _say_cardiomegaly(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key = (i, "all")
    sev, adv = f.severity, _ADVERB[f.severity]
    if f.certainty == -1:
        options = ["Possible mild cardiomegaly.", "Mild cardiomegaly cannot be excluded."]
        return _Statement(pick(rng, options), [("cardiomegaly", "heart_size", -1, key)], "heart")
    if section == "impression":
        options = [f"{_cap(sev)} cardiomegaly.", "Cardiomegaly."]
    else:
        options = [
            f"{_cap(sev)} cardiomegaly.",
            f"There is {sev} cardiomegaly.",
            "Cardiomegaly is present.",
            f"The heart is {adv} enlarged.",
            f"The cardiac silhouette is {adv} enlarged.",
            f"{_cap(sev)} enlargement of the cardiac silhouette.",
            f"Heart size is {adv} enlarged.",
        ]
    return _Statement(pick(rng, options), [("cardiomegaly", "heart_size", 1, key)], "heart")


def _say_effusion(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    sev = f.severity
    c = f.certainty
    if f.side == "bilateral":
        left, right = (i, "left"), (i, "right")
        pleural = [("effusion", "left_pleural", c, left), ("effusion", "right_pleural", c, right)]
        angles = [("left_costophrenic", left), ("right_costophrenic", right)]
        if c == -1:
            options = [
                ("Possible small bilateral pleural effusions.", pleural),
                ("Small bilateral pleural effusions cannot be excluded.", pleural),
            ]
            if section == "findings":
                rows = [("blunt", p, 1, k) for p, k in angles] + [("effusion", p, -1, k) for p, k in angles]
                options.append(("Blunting of both costophrenic angles may represent small effusions.", rows))
            text, rows = pick(rng, options)
            return _Statement(text, rows, "pleura")
        heights = f.geometry["height"]
        larger = "right" if heights["right"] > heights["left"] else "left"
        options = [("Bilateral pleural effusions.", pleural), (f"{_cap(sev)} bilateral pleural effusions.", pleural)]
        if section == "findings":
            options += [
                (f"There are {sev} bilateral pleural effusions.", pleural),
                (f"{_cap(sev)} pleural effusions bilaterally.", pleural),
            ]
            if abs(heights["right"] - heights["left"]) > 0.2 * max(heights.values()):
                options.append(
                    (f"{_cap(sev)} bilateral pleural effusions, {larger} greater than {_OTHER_SIDE[larger]}.", pleural)
                )
            if sev == "small":
                rows = [(entity, p, 1, k) for entity in ("blunt", "effusion") for p, k in angles]
                options += [
                    ("Small effusions blunt both costophrenic angles.", rows),
                    ("Both costophrenic angles are blunted by small effusions.", rows),
                ]
        text, rows = pick(rng, options)
        return _Statement(text, rows, "pleura")

    s = f.side
    key = (i, s)
    pleural = [("effusion", f"{s}_pleural", c, key)]
    angle = f"{s}_costophrenic"
    if c == -1:
        options = [
            (f"Possible small {s} pleural effusion.", pleural),
            (f"A small {s} pleural effusion cannot be excluded.", pleural),
            (f"Possible trace {s} effusion.", pleural),
        ]
        if section == "findings":
            rows = [("blunt", angle, 1, key), ("effusion", angle, -1, key)]
            options.append((f"Blunting of the {s} costophrenic angle may represent a small effusion.", rows))
        text, rows = pick(rng, options)
        return _Statement(text, rows, "pleura")
    if section == "impression":
        options = [(f"{_cap(sev)} {s} pleural effusion.", pleural), (f"{_cap(s)} pleural effusion.", pleural)]
    else:
        options = [
            (f"{_cap(sev)} {s} pleural effusion.", pleural),
            (f"There is a {sev} {s} pleural effusion.", pleural),
            (f"{_cap(sev)} {s} pleural effusion is present.", pleural),
            (f"{_cap(sev)} layering {s} pleural effusion.", pleural),
            (f"{_cap(sev)} {s} effusion.", pleural),
            (f"There is a {sev} {s}-sided pleural effusion.", pleural),
        ]
        if sev == "small":
            rows = [("effusion", angle, 1, key), ("blunt", angle, 1, key)]
            options += [
                (f"A small effusion blunts the {s} costophrenic angle.", rows),
                (f"The {s} costophrenic angle is blunted by a small effusion.", rows),
                (f"Trace {s} pleural effusion.", pleural),
            ]
    text, rows = pick(rng, options)
    return _Statement(text, rows, "pleura")


def _say_pneumothorax(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    s, sev = f.side, f.severity
    key = (i, "all")
    if f.level == "apical":
        at_apex = [("pneumothorax", f"{s}_apical_lung", f.certainty, key)]
        if f.certainty == -1:
            options = [
                (f"Possible tiny {s} apical pneumothorax.", at_apex),
                (f"A small {s} apical pneumothorax cannot be excluded.", at_apex),
            ]
        elif section == "impression":
            options = [(f"{_cap(sev)} {s} apical pneumothorax.", at_apex), (f"{_cap(s)} apical pneumothorax.", at_apex)]
        else:
            options = [
                (f"{_cap(sev)} {s} apical pneumothorax.", at_apex),
                (f"There is a {sev} {s} apical pneumothorax.", at_apex),
                (f"{_cap(sev)} pneumothorax at the {s} apex.", at_apex),
                (f"A {sev} {s} apical pneumothorax is present.", at_apex),
                (f"There is a {sev} pneumothorax at the {s} apex.", at_apex),
            ]
        text, rows = pick(rng, options)
        return _Statement(text, rows, "pleura")
    pleural = [("pneumothorax", f"{s}_pleural", f.certainty, key)]  # a bare side: the pleural space
    hemithorax = [("pneumothorax", f"{s}_lung_unspec", f.certainty, key)]
    if f.certainty == -1:
        options = [
            (f"Possible small {s} pneumothorax.", pleural),
            (f"A small {s} pneumothorax cannot be excluded.", pleural),
        ]
    elif section == "impression":
        options = [(f"{_cap(sev)} {s} pneumothorax.", pleural), (f"{_cap(s)} pneumothorax.", pleural)]
    else:
        options = [
            (f"{_cap(sev)} {s} pneumothorax.", pleural),
            (f"There is a {sev} {s} pneumothorax.", pleural),
            (f"A {sev} {s}-sided pneumothorax is present.", pleural),
            (f"{_cap(sev)} pneumothorax in the {s} hemithorax.", hemithorax),
            (f"There is a {sev} pneumothorax in the {s} hemithorax.", hemithorax),
        ]
    text, rows = pick(rng, options)
    return _Statement(text, rows, "pleura")


def _say_consolidation(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    place = _place(f.side, f.level, f.lobe)
    pos, key = place.position, (i, "all")
    adj, prep = pick(rng, place.adjectives), pick(rng, place.phrases)
    qual = f.severity
    pneumonia = f.options.get("pneumonia")
    if f.certainty == -1:
        options = [
            (f"Possible {adj} consolidation.", [("consolidation", pos, -1, key)]),
            (f"Consolidation {prep} cannot be excluded.", [("consolidation", pos, -1, key)]),
            (
                f"Subtle {adj} opacity may represent early consolidation.",
                [("opacity", pos, 1, key), ("consolidation", pos, -1, key)],
            ),
        ]
        text, rows = pick(rng, options)
        return _Statement(text, rows, "lung")
    rows: list[Row] = [("consolidation", pos, 1, key)]
    if pneumonia == 1 and section == "impression":  # the impression names the diagnosis, at the same place
        return _Statement(f"{_cap(adj)} pneumonia.", [("pneumonia", pos, 1, key)], "lung")
    if pneumonia == -1:
        # An interpretation takes the site of what it interprets.
        rows.append(("pneumonia", pos, -1, key))
        options = [
            f"{_cap(adj)} consolidation, concerning for pneumonia.",
            f"{_cap(qual)} consolidation {prep} may represent pneumonia.",
            f"{_cap(adj)} consolidation, suspicious for pneumonia.",
            f"{_cap(qual)} consolidation {prep}, concerning for infection.",
        ]
        if section == "impression":
            options = options[:1] + [f"{_cap(adj)} consolidation, possibly pneumonia."]
        return _Statement(pick(rng, options), rows, "lung")
    if section == "impression":
        options = [f"{_cap(adj)} consolidation.", f"{_cap(qual)} {adj} consolidation."]
    else:
        options = [
            f"{_cap(adj)} consolidation.",
            f"{_cap(qual)} consolidation {prep}.",
            f"There is {qual} consolidation {prep}.",
            f"Airspace consolidation {prep}.",
            f"{_cap(qual)} {adj} airspace consolidation.",
        ]
        if f.options.get("bronchograms"):
            options.append(f"{_cap(adj)} consolidation containing air bronchograms.")
    return _Statement(pick(rng, options), rows, "lung")


def _say_opacity(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    place = _place(f.side, f.level, f.lobe)
    pos, key = place.position, (i, "all")
    adj, prep = pick(rng, place.adjectives), pick(rng, place.phrases)
    qual = f.severity
    interpretation = f.options.get("interpretation")
    rows: list[Row] = [("opacity", pos, 1, key)]
    if interpretation is None:
        if section == "impression":
            options = [f"{_cap(adj)} opacity.", f"{_cap(qual)} {adj} opacity."]
        else:
            options = [
                f"{_cap(qual)} {adj} opacity.",
                f"There is a {qual} opacity {prep}.",
                f"{_cap(qual)} opacity {prep}.",
                f"Increased opacification {prep}.",
                f"{_cap(qual)} opacities {prep}.",
                f"A {qual} {adj} opacity is noted.",
            ]
        return _Statement(pick(rng, options), rows, "lung")
    # An interpretation (or an alternative) takes the site of the opacity it interprets.
    if interpretation == "atelectasis_or_pneumonia":
        rows += [("atelectasis", pos, -1, key), ("pneumonia", pos, -1, key)]
        options = [
            f"{_cap(qual)} {adj} opacity may represent atelectasis or early pneumonia.",
            f"{_cap(qual)} opacity {prep} could reflect atelectasis or infection.",
            f"{_cap(qual)} {adj} opacity, possibly atelectasis or pneumonia.",
        ]
    elif interpretation == "pneumonia":
        rows.append(("pneumonia", pos, -1, key))
        options = [
            f"{_cap(qual)} {adj} opacity, concerning for pneumonia.",
            f"{_cap(qual)} opacity {prep}, suspicious for pneumonia.",
            f"{_cap(qual)} {adj} opacity may represent early pneumonia.",
            f"{_cap(qual)} opacity {prep}, suggestive of pneumonia.",
        ]
    else:
        rows.append(("atelectasis", pos, -1, key))
        options = [
            f"{_cap(qual)} {adj} opacity, possibly atelectasis.",
            f"{_cap(qual)} opacity {prep} may represent atelectasis.",
            f"{_cap(qual)} {adj} opacity, suggestive of atelectasis.",
        ]
    return _Statement(pick(rng, options), rows, "lung")


def _say_atelectasis(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key, qual, c = (i, "all"), f.severity, f.certainty
    if f.level == "retrocardiac":
        rows = [("atelectasis", "retrocardiac", c, key)]
        if c == -1:
            options = ["Possible retrocardiac atelectasis.", "Retrocardiac atelectasis cannot be excluded."]
        elif section == "impression":
            options = ["Retrocardiac atelectasis.", f"{_cap(qual)} retrocardiac atelectasis."]
        else:
            options = [
                "Retrocardiac atelectasis.",
                f"{_cap(qual)} retrocardiac atelectasis.",
                f"There is {qual} atelectasis in the retrocardiac region.",
                "Left retrocardiac atelectasis.",
                f"{_cap(qual)} atelectasis behind the heart.",
            ]
        return _Statement(pick(rng, options), rows, "lung")
    if f.side == "bilateral":
        rows = [("atelectasis", "lung_bases", c, key)]
        if c == -1:
            options = ["Possible bibasilar atelectasis.", "Bibasilar atelectasis cannot be excluded."]
        elif section == "impression":
            options = ["Bibasilar atelectasis.", f"{_cap(qual)} bibasilar atelectasis."]
        else:
            options = [
                "Bibasilar atelectasis.",
                f"{_cap(qual)} bibasilar atelectasis.",
                f"{_cap(qual)} atelectasis at the lung bases.",
                f"There is {qual} bibasilar atelectasis.",
                f"{_cap(qual)} atelectasis at both lung bases.",
            ]
        return _Statement(pick(rng, options), rows, "lung")
    s = f.side
    rows = [("atelectasis", f"{s}_lower_lung", c, key)]
    if c == -1:
        options = [
            f"Possible {qual} atelectasis at the {s} base.",
            f"{_cap(s)} basilar atelectasis cannot be excluded.",
        ]
    elif section == "impression":
        options = [f"{_cap(s)} basilar atelectasis.", f"{_cap(qual)} {s} basilar atelectasis."]
    else:
        options = [
            f"{_cap(qual)} {s} basilar atelectasis.",
            f"{_cap(s)} basilar atelectasis.",
            f"{_cap(qual)} atelectasis at the {s} base.",
            f"{_cap(qual)} atelectasis in the {s} lower lung.",
            f"There is {qual} atelectasis at the {s} lung base.",
        ]
    return _Statement(pick(rng, options), rows, "lung")


def _say_edema(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key, sev = (i, "all"), f.severity
    if f.certainty == -1:
        options = [
            ("Possible mild pulmonary edema.", [("edema", "pulmonary", -1, key)]),
            ("Mild interstitial edema cannot be excluded.", [("edema", "interstitium", -1, key)]),
            (
                "Perihilar opacities, possibly mild edema.",
                [("opacity", "hilar_unspec", 1, key), ("edema", "hilar_unspec", -1, key)],
            ),
        ]
        text, rows = pick(rng, options)
        return _Statement(text, rows, "lung")
    pulmonary = [("edema", "pulmonary", 1, key)]
    interstitial = [("edema", "interstitium", 1, key)]
    if section == "impression":
        options = [
            (f"{_cap(sev)} pulmonary edema.", pulmonary),
            ("Pulmonary edema.", pulmonary),
            (f"{_cap(sev)} interstitial edema.", interstitial),
        ]
    else:
        options = [
            (f"{_cap(sev)} pulmonary edema.", pulmonary),
            (f"There is {sev} pulmonary edema.", pulmonary),
            (f"{_cap(sev)} interstitial edema.", interstitial),
            (
                f"Pulmonary vascular congestion with {sev} interstitial edema.",
                [("congestion", "pulmonary", 1, key)] + interstitial,
            ),
            (
                f"Perihilar opacities consistent with {sev} pulmonary edema.",
                [("opacity", "hilar_unspec", 1, key)] + pulmonary,
            ),
            (
                f"Increased interstitial markings consistent with {sev} interstitial edema.",
                [("marking", "interstitium", 1, key)] + interstitial,
            ),
        ]
    text, rows = pick(rng, options)
    return _Statement(text, rows, "lung")


def _say_round_lesion(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    place = _place(f.side, f.level, f.lobe)
    pos, key = place.position, (i, "all")
    adj, prep = pick(rng, place.adjectives), pick(rng, place.phrases)
    d = f"{f.size_cm:.1f}"
    noun = f.kind
    if f.certainty == -1:
        if noun == "nodule":
            options = [
                (f"Possible {d} cm nodule {prep}.", [("nodule", pos, -1, key)]),
                (f"A small nodule {prep} cannot be excluded.", [("nodule", pos, -1, key)]),
                (f"Possible {adj} nodule.", [("nodule", pos, -1, key)]),
            ]
        else:
            both = [("opacity", pos, 1, key), ("mass", pos, -1, key)]
            options = [
                (f"Rounded {adj} opacity, possibly a mass.", both),
                (f"{_cap(d)} cm {adj} opacity may represent a mass.", both),
                (f"A {adj} mass cannot be excluded.", [("mass", pos, -1, key)]),
            ]
        text, rows = pick(rng, options)
        return _Statement(text, rows, "lung")
    rows = [(noun, pos, 1, key)]
    if section == "impression":
        follow = (
            "Recommend chest CT for further evaluation."
            if noun == "nodule"
            else "Recommend CT for further characterization."
        )
        options = [f"A {d} cm {adj} {noun}. {follow}", f"{_cap(adj)} {noun}.", f"{_cap(adj)} {noun}. {follow}"]
        return _Statement(pick(rng, options), rows, "lung")
    options = [
        f"{d} cm {noun} {prep}.",
        f"There is a {d} cm {noun} {prep}.",
        f"A {d} cm {adj} {noun} is noted.",
        f"{_cap(adj)} {noun} measuring {d} cm.",
    ]
    if noun == "nodule":
        options += [f"Well-circumscribed {d} cm nodule {prep}.", f"Rounded {d} cm nodule {prep}."]
    else:
        options += [f"Lobulated {d} cm {adj} mass.", f"Large {adj} mass measuring approximately {d} cm."]
    return _Statement(pick(rng, options), rows, "lung")


_SITE_WORDS = {
    "svc": ("the SVC", "the mid SVC", "the lower SVC"),
    "cavoatrial_junction": ("the cavoatrial junction",),
    "right_atrium": ("the right atrium",),
}


def _say_device(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key = (i, "all")
    if f.kind == "et_tube":
        d = f"{f.size_cm:.1f}"
        rows = [("tube", "trachea", 1, key)]
        if section == "impression":
            options = [f"Endotracheal tube {d} cm above the carina.", "Endotracheal tube in the mid trachea."]
        else:
            options = [
                f"Endotracheal tube terminates {d} cm above the carina.",
                f"An endotracheal tube terminates approximately {d} cm above the carina.",
                f"ET tube ends approximately {d} cm above the carina.",
                f"The endotracheal tube is appropriately placed, {d} cm above the carina.",
                "Endotracheal tube terminates in the mid trachea.",
                f"Endotracheal tube in the trachea, {d} cm above the carina.",
            ]
        return _Statement(pick(rng, options), rows, "device")
    if f.kind in ("central_line", "picc"):
        site = f.options["tip"]
        where = pick(rng, _SITE_WORDS[site])
        if f.kind == "picc":
            rows = [("picc", site, 1, key)]
            options = [
                f"PICC terminates in {where}.",
                f"Peripherally inserted central catheter ends in {where}.",
                f"A PICC line terminates in {where}.",
                f"{_cap(f.side)} arm PICC terminates in {where}.",
                f"The PICC ends in {where}.",
            ]
        else:
            entity = f.options["noun"]
            nouns = ("central venous catheter",) if entity == "catheter" else ("central line", "central venous line")
            noun = pick(rng, nouns)
            rows = [(entity, site, 1, key)]
            options = [
                f"{_cap(noun)} terminates in {where}.",
                f"The {noun} ends in {where}.",
                f"{_cap(noun)} with its end in {where}.",
                f"A {noun} terminates in {where}.",
            ]
        if site == "cavoatrial_junction":
            options = [option.replace(" in the cavoatrial", " at the cavoatrial") for option in options]
        return _Statement(pick(rng, options), rows, "device")
    # pacemaker: the generator, then the leads, in separate sentences so each takes its own anatomy
    leads = f.options["leads"]
    rows: list[Row] = [("pacemaker", "other", 1, (i, "generator"))]
    generator = pick(
        rng,
        (
            "Left chest wall pacemaker.",
            "Pacemaker generator overlies the left chest wall.",
            "Dual-chamber pacemaker projects over the left chest wall."
            if len(leads) == 2
            else "Single-chamber pacemaker projects over the left chest wall.",
            "Left chest wall pacer in place.",
        ),
    )
    if section == "impression":
        return _Statement("Left chest wall pacemaker in place.", rows, "device")
    rows += [("lead", lead, 1, (i, f"lead_{lead}")) for lead in leads]
    if len(leads) == 2:
        lead_text = pick(
            rng,
            (
                "Leads terminate in the right atrium and right ventricle.",
                "The leads are in the right atrium and right ventricle.",
                "Pacing leads terminate in the right atrium and right ventricle.",
            ),
        )
    else:
        lead_text = pick(
            rng, ("A single lead terminates in the right ventricle.", "The lead terminates in the right ventricle.")
        )
    return _Statement(f"{generator} {lead_text}", rows, "device")


def _say(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    if f.kind in ("nodule", "mass"):
        return _say_round_lesion(f, i, rng, section)
    if f.kind in ("et_tube", "central_line", "picc", "pacemaker"):
        return _say_device(f, i, rng, section)
    return {
        "cardiomegaly": _say_cardiomegaly,
        "effusion": _say_effusion,
        "pneumothorax": _say_pneumothorax,
        "consolidation": _say_consolidation,
        "opacity": _say_opacity,
        "atelectasis": _say_atelectasis,
        "edema": _say_edema,
    }[f.kind](f, i, rng, section)


# Normal statements by topic: (text, rows). A topic is offered only when no finding contradicts it; the zeros a
# normal statement implies ("Heart size is normal" -> no cardiomegaly) are rows too (docs/extraction.md).
_NORMAL_STATEMENTS: dict[str, tuple[tuple[str, tuple[tuple[str, str, int], ...]], ...]] = {
    "lungs": tuple(
        (text, (("clear", "unspecified", 1), ("consolidation", "unspecified", 0), ("opacity", "unspecified", 0)))
        for text in ("Lungs are clear.", "The lungs are clear.", "Clear lungs.")
    ),
    "heart": tuple(
        (text, (("normal", "heart_size", 1), ("cardiomegaly", "heart_size", 0)))
        for text in (
            "Heart size is normal.",
            "The heart is normal in size.",
            "Normal heart size.",
            "The cardiac silhouette is normal in size.",
        )
    ),
    "mediastinum": (
        ("Cardiomediastinal silhouette is within normal limits.", (("normal", "mediastinal", 1),)),
        ("The cardiomediastinal silhouette is normal.", (("normal", "mediastinal", 1),)),
        ("Normal cardiomediastinal contours.", (("normal", "mediastinal", 1),)),
        ("Mediastinal contours are unremarkable.", (("unremarkable", "mediastinal", 1),)),
        ("The mediastinum is unremarkable.", (("unremarkable", "mediastinal", 1),)),
    ),
    "hila": (
        ("The hila are normal.", (("normal", "hilar_unspec", 1),)),
        ("Hilar contours are unremarkable.", (("unremarkable", "hilar_unspec", 1),)),
    ),
    "vasculature": (
        ("Pulmonary vasculature is normal.", (("normal", "pulmonary", 1), ("congestion", "pulmonary", 0))),
    ),
    "volumes": (("Lung volumes are normal.", (("normal", "lung_volumes", 1),)),),
    "angles": tuple(
        (text, (("sharp", "costophrenic_unspec", 1), ("effusion", "costophrenic_unspec", 0)))
        for text in ("The costophrenic angles are sharp.", "Costophrenic angles are sharp.")
    ),
    "bones": (
        ("Osseous structures are intact.", (("intact", "other", 1), ("fracture", "other", 0))),
        ("The osseous structures are unremarkable.", (("unremarkable", "other", 1),)),
    ),
    # Real reports say so when there is nothing in place; without it, device labels would never be 0.
    "devices": (
        ("No lines or tubes.", (("line", "unspecified", 0), ("tube", "unspecified", 0))),
        ("No support devices.", (("device", "unspecified", 0),)),
        ("No pacemaker or central venous catheter.", (("pacemaker", "unspecified", 0), ("catheter", "unspecified", 0))),
        ("No endotracheal or enteric tube.", (("tube", "unspecified", 0),)),
        ("No PICC or central line.", (("picc", "unspecified", 0), ("line", "unspecified", 0))),
        ("No pacing leads.", (("lead", "unspecified", 0),)),
    ),
}

_GLOBAL_NORMAL = (
    ("No acute cardiopulmonary process.", (("process", "cardiopulmonary", 0),)),
    ("No acute cardiopulmonary abnormality.", (("abnormality", "cardiopulmonary", 0),)),
    ("No radiographic evidence of acute cardiopulmonary disease.", (("disease", "cardiopulmonary", 0),)),
)

_TOPIC_OF_NORMAL = {
    "lungs": "lung",
    "heart": "heart",
    "mediastinum": "heart",
    "hila": "heart",
    "vasculature": "lung",
    "volumes": "lung",
    "angles": "pleura",
    "bones": "bone",
    "devices": "global",
}

# Negated findings: the words for each and the position those words give.
_NEGATABLE = {
    "effusion": (
        ("pleural effusion", "pleural_unspec"),
        ("effusion", "unspecified"),
        ("pleural effusions", "pleural_unspec"),
    ),
    "pneumothorax": (("pneumothorax", "unspecified"),),
    "consolidation": (("focal consolidation", "unspecified"), ("consolidation", "unspecified")),
    "edema": (("pulmonary edema", "pulmonary"), ("edema", "unspecified")),
    "cardiomegaly": (("cardiomegaly", "heart_size"),),
}

_SINGLE_NEGATIONS = {
    "effusion": ("No {0}.", "There is no {0}.", "{1} is not seen.", "{1} is not identified."),
    "pneumothorax": ("No {0}.", "There is no {0}.", "No evidence of {0}.", "{1} is not seen.", "No {0} is identified."),
    "consolidation": ("No {0}.", "There is no {0}."),
    "edema": ("No {0}.", "There is no {0}.", "No evidence of {0}."),
    "cardiomegaly": ("No {0}.",),
}


def _negations(rng: np.random.Generator, absent: list[str], count: int) -> list[_Statement]:
    """Statements that rule out findings in `absent` (each at most once), as lists or single sentences."""
    statements = []
    pool = [
        entity for entity in ("consolidation", "effusion", "pneumothorax", "edema", "cardiomegaly") if entity in absent
    ]
    rng.shuffle(pool)
    while pool and len(statements) < count:
        listable = [entity for entity in pool if entity != "cardiomegaly"]
        if len(listable) >= 2 and rng.random() < 0.55:
            size = int(rng.integers(2, min(3, len(listable)) + 1))
            chosen = listable[:size]
            words = [pick(rng, _NEGATABLE[entity]) for entity in chosen]
            # Bare nouns first: "No pneumothorax or pleural effusion" leaves no doubt which noun "pleural" qualifies.
            order = sorted(range(size), key=lambda k: words[k][1] != "unspecified")
            chosen, words = [chosen[k] for k in order], [words[k] for k in order]
            rows = [(entity, position, 0, None) for entity, (_, position) in zip(chosen, words, strict=True)]
            names = [word for word, _ in words]
            joined = f"{names[0]} or {names[1]}" if len(names) == 2 else f"{names[0]}, {names[1]}, or {names[2]}"
            intro = pick(rng, ("No ", "There is no ", "No evidence of "))
            statements.append(_Statement(f"{intro}{joined}.", rows, "pleura"))
            pool = [entity for entity in pool if entity not in chosen]
            continue
        entity = pool.pop(0)
        word, position = pick(rng, _NEGATABLE[entity])
        template = pick(rng, _SINGLE_NEGATIONS[entity])
        text = template.format(word, _cap(word))
        if word.endswith("s"):  # "Pleural effusions are not seen."
            text = text.replace(" is not", " are not").replace("There is no", "There are no")
        topic = "heart" if entity == "cardiomegaly" else "pleura"
        statements.append(_Statement(text, [(entity, position, 0, None)], topic))
    return statements


_PARENCHYMAL = {"consolidation", "opacity", "atelectasis", "edema", "nodule", "mass", "pneumothorax", "effusion"}

_DEVICES = {"et_tube", "central_line", "picc", "pacemaker"}

_IMPRESSION_PRIORITY = (
    "pneumothorax",
    "consolidation",
    "mass",
    "edema",
    "effusion",
    "cardiomegaly",
    "opacity",
    "nodule",
    "atelectasis",
    "et_tube",
    "central_line",
    "picc",
    "pacemaker",
)

_TOPIC_ORDER = ("device", "lung", "pleura", "heart", "bone", "global")


def write_report(spec: CaseSpec, rng: np.random.Generator) -> tuple[str, str, list[Row]]:
    """Findings and impression text for a case, and the rows their sentences state.

    Every rendered finding is stated in the findings section (present, or uncertain when its certainty is -1);
    the impression repeats the main ones, or all of them when the findings section is left empty.
    """
    statements, mentioned, absent = _findings_section(spec, rng)
    statements, impression = _impression_section(spec, rng, statements, mentioned, absent)
    if rng.random() < 0.6:
        statements.sort(key=lambda statement: _TOPIC_ORDER.index(statement.topic))
    else:
        rng.shuffle(statements)
    findings_text = " ".join(statement.text for statement in statements)
    if len(impression) >= 2 and rng.random() < 0.4:
        impression_text = " ".join(f"{k}. {statement.text}" for k, statement in enumerate(impression, start=1))
    else:
        impression_text = " ".join(statement.text for statement in impression)
    rows = [row for statement in statements + impression for row in statement.rows]
    return findings_text, impression_text, rows


def _findings_section(spec: CaseSpec, rng: np.random.Generator) -> tuple[list[_Statement], set[str], list[str]]:
    """The findings' statements, normal statements whose topic no finding contradicts, and negations of findings
    that are not there; with the entities mentioned and those stated absent."""
    findings = spec.findings
    kinds = {f.kind for f in findings}
    sides_with_effusion = {
        s for f in findings if f.kind == "effusion" for s in (("right", "left") if f.side == "bilateral" else (f.side,))
    }
    statements = [_say(f, i, rng, "findings") for i, f in enumerate(findings)]
    mentioned = {row[0] for statement in statements for row in statement.rows}
    allowed = {
        "lungs": not (kinds & _PARENCHYMAL),
        "heart": "cardiomegaly" not in kinds,
        "mediastinum": "cardiomegaly" not in kinds and not any(f.level == "hilar" for f in findings),
        "hila": "edema" not in kinds and not any(f.level == "hilar" for f in findings),
        "vasculature": "edema" not in kinds,
        "volumes": not (kinds & {"atelectasis", "effusion", "pneumothorax"}),
        "angles": "effusion" not in kinds,
        "bones": True,
        "devices": not (kinds & _DEVICES),
    }
    topics = [topic for topic, ok in allowed.items() if ok]
    if findings:
        n_normals = int(rng.integers(0, min(3, len(topics)) + 1))
    else:
        n_normals = int(rng.integers(2, min(5, len(topics)) + 1))
    chosen = [str(t) for t in rng.choice(topics, size=n_normals, replace=False)] if n_normals else []
    if not findings and rng.random() < 0.7 and "lungs" not in chosen:
        chosen.append("lungs")  # most normal reports say so
    for topic in chosen:
        text, rows = pick(rng, _NORMAL_STATEMENTS[topic])
        statements.append(_Statement(text, [(e, p, x, None) for e, p, x in rows], _TOPIC_OF_NORMAL[topic]))
    implied_absent = {row[0] for statement in statements for row in statement.rows if row[2] == 0}
    # "Heart size is normal. No cardiomegaly." says the same thing twice; other pairs read naturally.
    absent = [e for e in _NEGATABLE if e not in mentioned and not (e == "cardiomegaly" and e in implied_absent)]
    statements += _negations(rng, absent, int(rng.integers(0 if findings else 1, 3)))
    if len(sides_with_effusion) == 1 and rng.random() < 0.3:
        other = _OTHER_SIDE[next(iter(sides_with_effusion))]
        statements.append(
            _Statement(f"No {other} pleural effusion.", [("effusion", f"{other}_pleural", 0, None)], "pleura")
        )
    if not _abnormal(findings) and rng.random() < 0.3:
        text, rows = pick(rng, _GLOBAL_NORMAL)
        statements.append(_Statement(text, [(e, p, x, None) for e, p, x in rows], "global"))
    return statements, mentioned, absent


def _abnormal(findings) -> list[int]:
    return [i for i, f in enumerate(findings) if f.kind not in _DEVICES]


def _impression_section(
    spec: CaseSpec, rng: np.random.Generator, statements: list[_Statement], mentioned: set[str], absent: list[str]
) -> tuple[list[_Statement], list[_Statement]]:
    """The main findings (all of them when the findings section is dropped), or a normal summary; returns the
    findings section (emptied when dropped) and the impression."""
    findings = spec.findings
    drop_findings = rng.random() < 0.05
    drop_impression = not drop_findings and rng.random() < 0.07
    ranked = sorted(range(len(findings)), key=lambda i: _IMPRESSION_PRIORITY.index(findings[i].kind))
    if drop_findings:
        selected = ranked
    else:
        selected = [i for i in ranked if findings[i].kind not in _DEVICES][: int(rng.integers(1, 4))]
        if rng.random() < 0.15:
            selected += [i for i in ranked if findings[i].kind in _DEVICES][:1]
    impression = [_say(findings[i], i, rng, "impression") for i in sorted(selected, key=ranked.index)]
    if not _abnormal(findings):
        text, rows = pick(rng, _GLOBAL_NORMAL)
        impression.append(_Statement(text, [(e, p, x, None) for e, p, x in rows], "global"))
    elif "pneumothorax" not in mentioned and "pneumothorax" in absent and rng.random() < 0.15:
        impression.append(_Statement("No pneumothorax.", [("pneumothorax", "unspecified", 0, None)], "pleura"))
    return ([] if drop_findings else statements), ([] if drop_impression else impression)


def truth(rows: list[Row], boxes: dict[tuple[int, str], Box]) -> list[TruthRow]:
    """Deduplicates rows by (entity, position) and attaches boxes.

    A finding hedged in one section and stated in the other ("may represent pneumonia" ... "Left upper lobe
    pneumonia.") keeps the strongest statement, 1 over 0 over -1, as the labels do.
    """
    truth: dict[tuple[str, str], TruthRow] = {}
    for entity, position, existence, key in rows:
        box = boxes.get(key) if key is not None and existence != 0 else None
        if key is not None and box is None and existence != 0:
            box = boxes.get((key[0], "all"))
        previous = truth.get((entity, position))
        if previous is not None and previous.existence >= existence:
            continue
        truth[(entity, position)] = TruthRow(entity, position, existence, box or (previous.box if previous else None))
    return list(truth.values())
