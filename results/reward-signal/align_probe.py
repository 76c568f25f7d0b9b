import sys, numpy as np, torch
from lada.common.config import LadaConfig
from lada.client.app import ClientApp
from lada.server.federation import Federation
from lada.server.transport.inprocess import InProcessGrid
from lada.common.learner import held_out_slice
from lada.common.models import spec_of
torch.set_num_threads(1)
cfg = LadaConfig.load("benchmarks/premise.yaml", overrides={"run.seed": 5, "run.method": "random", "run.name": "ap"}, env=False)
apps = {n: ClientApp(cfg, n) for n in ["client-1", "client-2", "client-3"]}
fed = Federation(cfg, InProcessGrid(apps), None, log=lambda s: None)
rng = np.random.default_rng(0)
pub = [fed.public[i] for i in rng.choice(len(fed.public), 150, replace=False)]
def welch(a, b):
    d = a.mean() - b.mean(); se = np.sqrt(a.var(ddof=1)/len(a) + b.var(ddof=1)/len(b)); return d, d/se
for name, app in apps.items():
    L = app.learner
    params = [p for p in L.model.parameters() if p.requires_grad]
    cap = spec_of(cfg.models.clients[name]).pretrain_max_steps
    own = cfg.data.client_domains[name]
    mask = np.array([s.domain == own and s.difficulty <= cap for s in pub])
    L.model.eval()
    G = torch.stack([L._loss_grad(params, [s.question], [s.path]) for s in pub])
    held_ao, _ = held_out_slice(app.train_set, 32)
    def gsum(samples):
        return sum(L._loss_grad(params, [s.question], [s.path]) for s in samples)
    h_ao = gsum(held_ao)
    from lada.common.data import generate
    worked = generate([own], 32, prefix="wk", min_steps=1, max_steps=cap, seed=99)
    h_wk = gsum(worked)
    mu = G.mean(0)
    for label, h in [("answer-only", h_ao), ("worked", h_wk)]:
        for cen in (False, True):
            g = G - mu if cen else G
            hh = h / len(held_ao if label == "answer-only" else worked) - (mu if cen else 0)
            cos = (g @ hh / (g.norm(dim=1) * hh.norm()).clamp_min(1e-12)).numpy()
            d, t = welch(cos[mask], cos[~mask])
            print(f"{name} held={label:<11} centred={cen!s:<5} oracle's {mask.sum():>3}: cos diff {d:+.4f} t {t:+.1f}", flush=True)
    # NLL-as-feature: receiver's own NLL on y+
    nll = L.nll([s.question for s in pub], [s.path for s in pub])
    d, t = welch(-nll[mask], -nll[~mask]); print(f"{name} -NLL(y+) oracle's diff {d:+.3f} t {t:+.1f}")
