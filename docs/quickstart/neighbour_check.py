"""S2Lite-Neighbour: the old candidate list (reference + 4 neighbours) vs the new one (4 neighbours), same queries."""
import sys, json
import numpy as np
from rsmeb_eval.dataset_io import load_task
from rsmeb_eval.encoders import SentenceTransformerEncoder
from rsmeb_eval.registry import get_task
from rsmeb_eval.metrics import candidate_metrics

data, models = sys.argv[1], sys.argv[2:]
meta = get_task("S2Lite-Neighbour").metadata
q, c = load_task(data, "S2Lite-Neighbour", "test")
corpus = {r["id"]: r["image"] for r in c}
refs = {}
for r in q:
    refs[r["query_id"].rsplit("_", 1)[0]] = r["image"]
out = {}
for m in models:
    enc = SentenceTransformerEncoder(m)
    qv = enc.encode([{"image": r["image"], "text": r["text"]} for r in q], meta.query_instruction)
    ids = sorted(set(corpus) | set(refs))
    items = [{"image": corpus.get(i) if i in corpus else refs[i]} for i in ids]
    cv = enc.encode(items, meta.candidate_instruction)
    index = {i: k for k, i in enumerate(ids)}
    s = qv @ cv.T
    new_scores, new_pos, old_scores, old_pos, ref_first = [], [], [], [], 0
    for k, r in enumerate(q):
        ref = r["query_id"].rsplit("_", 1)[0]
        cands = r["candidate_ids"]
        new_scores.append(s[k, [index[x] for x in cands]]); new_pos.append(np.array([x in r["positive_ids"] for x in cands]))
        old = [ref] + cands
        sc = s[k, [index[x] for x in old]]
        old_scores.append(sc); old_pos.append(np.array([x in r["positive_ids"] for x in old]))
        ref_first += int(np.argmax(sc) == 0)
    out[m] = {"old (reference among 5 candidates)": candidate_metrics(old_scores, old_pos),
              "old: reference ranked first": ref_first / len(q),
              "new (4 neighbours)": candidate_metrics(new_scores, new_pos)}
print(json.dumps(out, indent=1))
