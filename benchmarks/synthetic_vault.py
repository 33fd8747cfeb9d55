"""A seeded synthetic Obsidian vault for benchmarks/index_bench.py: realistic notes in folders,
with frontmatter, headings, wikilinks and lists, plus search queries drawn from the same vocabulary."""

from __future__ import annotations

import math
import random
from pathlib import Path


FOLDERS = {
    "Garden": "garden", "Garden/Orchard": "garden", "Recipes": "cooking", "Recipes/Baking": "cooking",
    "Work/Projects": "software", "Work/Meetings": "work", "Work/Infra": "software", "Finance": "finance",
    "Health": "health", "Fitness": "fitness", "Travel": "travel", "Reading": "reading",
    "Home": "home", "Home/Repairs": "home", "Music": "music", "Journal": "journal",
    "Learning": "learning", "People": "people", "Car": "car", "Inbox": "mixed",
}

TOPICS = {
    "garden": dict(
        nouns="tomato seedling compost mulch raised-bed trellis pepper squash irrigation soil aphid greenhouse "
        "cutting rootstock pruning-saw blossom fertiliser hedge lawn bulb rhubarb strawberry kale beetroot".split(),
        verbs="water prune transplant harvest sow mulch stake fertilise thin graft weed repot".split(),
        adjs="shaded frost-hardy leggy sandy clay-heavy drought-tolerant blighted early late vigorous".split(),
    ),
    "cooking": dict(
        nouns="sourdough starter dough oven skillet broth marinade risotto curry brine crust glaze custard "
        "stock lentil chickpea focaccia ferment pickle dumpling noodle stew sauce spice-blend".split(),
        verbs="knead proof braise roast simmer whisk fold sear ferment reduce season bake".split(),
        adjs="crispy silky tangy smoky overproofed caramelised spicy creamy dense airy".split(),
    ),
    "software": dict(
        nouns="deployment migration database cache queue endpoint schema pipeline container cluster rollback "
        "latency benchmark index replica certificate webhook dashboard alert runbook scheduler".split(),
        verbs="deploy migrate refactor profile rollback shard cache monitor benchmark patch upgrade debug".split(),
        adjs="flaky idempotent stale degraded sharded asynchronous legacy nightly throttled redundant".split(),
    ),
    "work": dict(
        nouns="roadmap stakeholder retro standup milestone budget hiring offsite quarter deadline proposal "
        "review contract vendor headcount backlog priority agenda decision action-item".split(),
        verbs="align escalate prioritise schedule review approve delegate present negotiate draft".split(),
        adjs="blocked urgent quarterly cross-team tentative approved overdue strategic minor".split(),
    ),
    "finance": dict(
        nouns="budget invoice pension mortgage tax-return savings index-fund receipt expense dividend "
        "allowance subscription insurance premium deposit statement ledger".split(),
        verbs="reconcile invest transfer budget file claim rebalance save cancel refinance".split(),
        adjs="monthly deductible fixed variable overdue annual tax-free recurring".split(),
    ),
    "health": dict(
        nouns="appointment prescription allergy vaccine blood-pressure physio knee back sleep dentist "
        "checkup symptom dosage vitamin migraine posture".split(),
        verbs="book measure stretch rest track refill schedule monitor recover".split(),
        adjs="chronic mild sore inflamed regular fasting follow-up".split(),
    ),
    "fitness": dict(
        nouns="interval tempo-run deadlift squat kettlebell rowing cadence heart-rate marathon warm-up "
        "mobility plank swim bike route split".split(),
        verbs="train run lift swim cycle stretch recover taper log".split(),
        adjs="easy hard aerobic anaerobic hilly steady progressive".split(),
    ),
    "travel": dict(
        nouns="itinerary ferry hostel passport train-pass visa luggage trailhead campsite museum border "
        "layover rental booking ridge coastline".split(),
        verbs="book pack hike explore cross reserve navigate camp".split(),
        adjs="remote coastal alpine crowded overnight scenic rainy".split(),
    ),
    "reading": dict(
        nouns="chapter argument author thesis highlight quote memoir novel essay footnote translation "
        "protagonist bibliography series".split(),
        verbs="annotate summarise quote finish recommend reread critique".split(),
        adjs="dense lyrical persuasive slow-paced unreliable classic".split(),
    ),
    "home": dict(
        nouns="boiler radiator gutter window-seal drill shelf paint fuse-box tap drain insulation roof-tile "
        "thermostat damp wallpaper hinge".split(),
        verbs="repair replace seal paint bleed drill insulate clean sand".split(),
        adjs="leaky draughty mouldy loose cracked energy-efficient".split(),
    ),
    "music": dict(
        nouns="scale chord-progression metronome rehearsal setlist riff fingering tuning amplifier "
        "arrangement sight-reading tempo etude".split(),
        verbs="practise transpose rehearse record tune arrange improvise".split(),
        adjs="syncopated minor major muted legato staccato".split(),
    ),
    "journal": dict(
        nouns="morning walk mood gratitude weekend visit conversation habit goal evening letter memory".split(),
        verbs="reflect remember notice plan celebrate worry decide".split(),
        adjs="quiet restless hopeful tired grateful busy".split(),
    ),
    "learning": dict(
        nouns="flashcard lecture exercise proof derivation grammar vocabulary course notebook syllabus "
        "exam problem-set theorem".split(),
        verbs="memorise derive practise revise prove translate outline".split(),
        adjs="abstract introductory advanced spaced tricky".split(),
    ),
    "people": dict(
        nouns="birthday gift phone-call favour recommendation introduction reunion dinner anniversary".split(),
        verbs="call visit thank introduce invite congratulate".split(),
        adjs="old close distant new thoughtful".split(),
    ),
    "car": dict(
        nouns="tyre oil-change brake-pad MOT battery windscreen service mileage coolant wiper".split(),
        verbs="service replace inspect top-up rotate charge".split(),
        adjs="worn noisy flat overdue cheap".split(),
    ),
}
COMMON_NOUNS = "plan note week month idea problem result list step reason detail change cost time".split()
PLACES = "Lisbon Oslo Kyoto Porto Hobart Tromsø Valparaíso Ghent Bergen Leeds Madeira Cork".split()
NAMES = "Ana Ben Chloé Dev Ewa Farid Greta Hugo Ines Jonas Kemi Lars Mira Noor Omar Pia".split()
SENTENCES = [
    "The {adj} {noun} needs attention before {when}.",
    "I tried to {verb} the {noun} {how}, and it worked better than expected.",
    "{name} suggested we {verb} the {noun2} first, then the {noun}.",
    "Next time, {verb} the {noun} earlier and keep the {noun2} {adj}.",
    "Cost so far: about {num} for the {noun} and {num2} for the {noun2}.",
    "The main {cnoun} with the {noun} is that it gets {adj} after {num} days.",
    "We agreed to {verb} every {noun} on {day} unless it is {adj}.",
    "Last {cnoun} in {place} I had to {verb} the {noun} {how}.",
    "A {adj} {noun} is easier to {verb} than a {adj2} {noun2}.",
    "Remember: never {verb} the {noun} when the {noun2} is {adj}.",
    "See the {cnoun} from {day}; the {noun} was {adj} and the {noun2} was fine.",
    "{name} thinks the {noun} should be {adj} by {when}, which seems optimistic.",
    "The {noun} took {num} minutes to {verb}, twice the usual {cnoun}.",
    "Why is the {noun} always {adj}? Probably the {noun2}.",
]
WHEN = "spring|the weekend|Friday|the end of the month|March|the next review|winter|Monday".split("|")
HOW = "slowly|by hand|with the new tool|in two passes|carefully|in the morning|without help".split("|")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


class VaultGen:
    """Seeded, realistic-looking notes; every note's wording differs."""

    def __init__(self, seed: int, n: int):
        self.rng = random.Random(seed)
        self.n = n
        self.folders = list(FOLDERS)
        self.titles: list[str] = []
        seen = set()
        while len(self.titles) < n:
            folder = self.rng.choice(self.folders)
            topic = self._topic(folder)
            words = [self.rng.choice(topic["adjs"]).title(), self.rng.choice(topic["nouns"]).replace("-", " ").title()]
            if self.rng.random() < 0.5:
                words.append(self.rng.choice(COMMON_NOUNS).title())
            title = " ".join(words) + ("" if self.rng.random() < 0.3 else f" {self.rng.randint(1, 999)}")
            rel = f"{folder}/{title}.md"
            if rel.lower() in seen:
                continue
            seen.add(rel.lower())
            self.titles.append(rel)

    def _topic(self, folder: str) -> dict:
        name = FOLDERS[folder]
        return TOPICS[self.rng.choice(list(TOPICS))] if name == "mixed" else TOPICS[name]

    def sentence(self, topic: dict) -> str:
        r = self.rng
        nouns = topic["nouns"] + COMMON_NOUNS[:4]
        return r.choice(SENTENCES).format(
            adj=r.choice(topic["adjs"]), adj2=r.choice(topic["adjs"]), noun=r.choice(nouns), noun2=r.choice(nouns),
            verb=r.choice(topic["verbs"]), cnoun=r.choice(COMMON_NOUNS), name=r.choice(NAMES), place=r.choice(PLACES),
            when=r.choice(WHEN), how=r.choice(HOW), day=r.choice(DAYS), num=r.randint(2, 400), num2=r.randint(2, 400),
        )

    def paragraph(self, topic: dict, chars: int) -> str:
        out = []
        while sum(len(s) + 1 for s in out) < chars:
            s = self.sentence(topic)
            if self.rng.random() < 0.12:  # a wikilink to another note
                target = self.rng.choice(self.titles)[:-3]
                s = s[:-1] + f", see [[{target}]]."
            if self.rng.random() < 0.05:
                s += f" #{self.rng.choice(topic['nouns'])}"
            out.append(s)
        return " ".join(out)

    def bullet_list(self, topic: dict, chars: int) -> str:
        items, used = [], 0
        while used < chars:
            r = self.rng
            item = r.choice(
                [
                    f"- {r.choice(topic['verbs']).capitalize()} the {r.choice(topic['nouns'])} ({r.choice(DAYS)})",
                    f"- {r.choice(topic['adjs']).capitalize()} {r.choice(topic['nouns'])}: {r.randint(1, 90)} {r.choice(['g', 'min', 'km', 'EUR', 'pcs'])}",
                    f"- [ ] {r.choice(topic['verbs']).capitalize()} {r.choice(topic['nouns'])} with {r.choice(NAMES)}",
                    f"- [[{r.choice(self.titles)[:-3]}]]",
                ]
            )
            items.append(item)
            used += len(item) + 1
        return "\n".join(items)

    def note(self, i: int) -> tuple[str, str]:
        r = self.rng
        rel = self.titles[i]
        folder = rel.rsplit("/", 1)[0]
        topic = self._topic(folder)
        # ~lognormal sizes, 300-4000 characters, mean ~1,500
        target = int(min(3600, max(220, r.lognormvariate(math.log(1130), 0.6))))
        tags = r.sample(topic["nouns"], 2) + [FOLDERS[folder]]
        fm = f"---\ntags: [{', '.join(tags)}]\ncreated: 2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}\n"
        if r.random() < 0.2:
            fm += f"aliases: [{r.choice(topic['adjs']).title()} {r.choice(COMMON_NOUNS).title()}]\n"
        fm += f"status: {r.choice(['active', 'done', 'idea', 'archived'])}\n---\n\n"
        title = rel.rsplit("/", 1)[1][:-3]
        parts = [fm + f"# {title}\n", self.paragraph(topic, max(60, target // 8)) + "\n"]
        n_sections = r.randint(2, 5)
        budget = max(200, target - sum(len(p) for p in parts))
        for s in range(n_sections):
            level = "##" if s == 0 or r.random() < 0.6 else "###"
            heading = f"{r.choice(topic['verbs']).capitalize()} {r.choice(topic['nouns']).replace('-', ' ')}"
            parts.append(f"{level} {heading}\n")
            share = budget // n_sections
            if r.random() < 0.3:
                parts.append(self.bullet_list(topic, max(40, share // 2)) + "\n")
                share -= share // 2
            while share > 0:
                para = self.paragraph(topic, min(share, r.randint(150, 600)))
                parts.append(para + "\n")
                share -= len(para)
        return rel, "\n".join(parts)

    def write(self, root: Path) -> list[int]:
        sizes = []
        for i in range(self.n):
            rel, text = self.note(i)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            sizes.append(len(text))
        return sizes


def queries(gen: VaultGen, n: int) -> list[str]:
    """Varied searches: questions, keyword bags, note titles, names and places."""
    r = random.Random(gen.rng.random())
    out = []
    for i in range(n):
        topic = TOPICS[r.choice(list(TOPICS))]
        kind = i % 5
        if kind == 0:
            out.append(f"how do I {r.choice(topic['verbs'])} the {r.choice(topic['nouns']).replace('-', ' ')}?")
        elif kind == 1:
            out.append(" ".join(r.sample(topic["nouns"], 2) + [r.choice(topic["adjs"])]))
        elif kind == 2:
            out.append(r.choice(gen.titles).rsplit("/", 1)[1][:-3])
        elif kind == 3:
            out.append(f"what did {r.choice(NAMES)} say about the {r.choice(topic['nouns'])} in {r.choice(PLACES)}")
        else:
            out.append(f"why is my {r.choice(topic['nouns'])} so {r.choice(topic['adjs'])} after {r.choice(WHEN)}")
    return out
