"""Issue 17.3: explanations beside latent numbers on every page, dashboard JSON source/scores, hand-written
explanations kept across explainer reruns, search ranked by text match then score, the dense-latent filter, and
escaping. A private copy of the tiny indexed SAE (so the shared index is never touched), explained by the builtin
explainer first, as the demo bundle is."""

from __future__ import annotations

import re
import shutil
import sqlite3
from contextlib import closing

import pytest
from fastapi.testclient import TestClient

from tests.web.hardening_support import BEARER, make_app

SAE = "expl-sae"
TEXT = "The cat sat on the mat and the dog ran to the park."
FAR = 4e9  # a `created` time after the builtin run, so a test's auto explanation is the shown one


@pytest.fixture(scope="module")
def folder(sae_folder, indexed, tmp_path_factory):
    from app.explain.runner import run_explain

    dst = tmp_path_factory.mktemp("explain-ui") / SAE
    shutil.copytree(sae_folder, dst)
    run_explain(dst / "index.db", "builtin")
    return dst


@pytest.fixture(scope="module")
def db(folder):
    return folder / "index.db"


@pytest.fixture(scope="module")
def client(folder, tmp_path_factory):
    from app.web.services import Services

    services = Services.load(None, [folder], device="cpu")
    app = make_app(tmp_path_factory.mktemp("data"), services, max_interventions=4, max_new_tokens=4)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def put(db, latent: int, text: str, explainer: str = "test", scores: dict[str, float] | None = None) -> None:
    """Store an auto explanation (newer than the builtin one, so it is shown) and its builtin-scorer scores."""
    from app.explain import store

    with closing(store.open_db(db)) as conn:
        store.put_explanation(conn, latent, text, explainer, created=FAR)
        store.put_scores(conn, [store.Score(latent, explainer, "builtin", m, v, 50) for m, v in (scores or {}).items()])


def shown(db, latent: int) -> str | None:
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT text FROM explanations WHERE latent = ?", (latent,)).fetchone()
    return row[0] if row else None


def label_re(latent: int, text: str) -> str:
    """The `latent_label` macro's output: the number's link, then " · text"."""
    return (rf'<a href="/latents/{SAE}/{latent}">#{latent}</a><span class="latent-expl"[^>]*> · '
            + re.escape(text) + "</span>")


@pytest.fixture(scope="module")
def encoded(client):
    r = client.post("/api/encode", json={"text": TEXT, "sae": SAE, "top_k": 16})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def labelled(db, encoded):
    """A distinctive explanation on every latent of the encoding's top list."""
    latents = [t["latent"] for t in encoded["top_latents"]]
    assert latents
    for i in latents:
        put(db, i, f"lbl{i} words")
    return latents


def top_table_latents(html: str) -> list[int]:
    table = html.split('id="top-latents"', 1)[1].split("</table>", 1)[0]
    return [int(m) for m in re.findall(rf'href="/latents/{SAE}/(\d+)"', table)]


def test_the_builtin_explainer_labelled_the_copy(db):
    with closing(sqlite3.connect(db)) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM latent_explanations WHERE explainer = 'builtin'").fetchone()
    assert n > 0


def test_inspect_token_and_top_lists_show_labels(client, db, encoded, labelled):
    html = client.get("/", params={"text": TEXT, "sae": SAE}).text
    top = html.split('id="top-latents"', 1)[1].split("</table>", 1)[0]
    for i in labelled:
        assert re.search(label_re(i, f"lbl{i} words"), top), i
    tokens = html.split('id="top-latents"', 1)[0]  # the per-token tables come first
    row = next(r for r in encoded["latents_per_token"] if r)
    for x in row:
        text = shown(db, x["latent"])
        if text:
            assert re.search(label_re(x["latent"], text), tokens)


def test_dashboard_neighbours_search_steer_ablate_show_labels(client, db, labelled):
    i = labelled[0]
    # neighbours
    dash = client.get(f"/api/saes/{SAE}/latents/{i}").json()
    nb = dash["neighbors"][0]["latent"]
    put(db, nb, f"neighbour{nb} label")
    assert re.search(label_re(nb, f"neighbour{nb} label"), client.get(f"/latents/{SAE}/{i}").text)
    # search results
    assert re.search(label_re(i, f"lbl{i} words"), client.get(f"/latents/{SAE}/search", params={"q": f"lbl{i}"}).text)
    # the steer picker and the steer result
    page = client.get("/steer", params={"sae": SAE, "prompt": "The cat", "latent": i, "mode": "clamp",
                                        "value": 1, "max_new_tokens": 2})
    assert page.status_code == 200
    assert f'class="latent-expl picker-expl"> · lbl{i} words' in page.text
    assert re.search(label_re(i, f"lbl{i} words"), page.text)
    # the ablation list
    page = client.get("/ablate", params={"sae": SAE, "text": TEXT, "latent": str(i)})
    assert page.status_code == 200
    ablated = page.text.split('id="ablated-latents"', 1)[1].split("</p>", 1)[0]
    assert re.search(label_re(i, f"lbl{i} words"), ablated)


def test_api_encode_and_ablate_carry_explanations(client, labelled):
    r = client.post("/api/encode", json={"text": TEXT, "sae": SAE}).json()
    for t in r["top_latents"]:
        assert t["explanation"] == f"lbl{t['latent']} words"
    i = labelled[0]
    r = client.post("/api/ablate", json={"text": TEXT, "sae": SAE, "latents": [i]}).json()
    assert r["explanations"] == {str(i): f"lbl{i} words"}


def test_dashboard_json_source_and_scores_equal_the_store(client, db):
    latent = 3
    put(db, latent, "scored label", scores={"f1": 0.625, "precision": 0.5})
    d = client.get(f"/api/saes/{SAE}/latents/{latent}").json()
    with closing(sqlite3.connect(db)) as conn:
        (source, explainer) = conn.execute(
            "SELECT source, explainer FROM latent_explanations WHERE latent = ? ORDER BY source = 'human' DESC, "
            "created DESC LIMIT 1", (latent,)).fetchone()
        rows = conn.execute("SELECT scorer, metric, value, n FROM explanation_scores WHERE latent = ? AND "
                            "explainer = ?", (latent, explainer)).fetchall()
    expected: dict = {}
    for scorer, metric, value, n in rows:
        expected.setdefault(scorer, {})[metric] = value
        expected[scorer][metric + "_n"] = n
    assert (source, explainer) == ("auto", "test")
    assert d["explanation"] == "scored label"
    assert d["explanation_source"] == "auto" and d["explanation_scores"] == expected
    assert expected == {"builtin": {"f1": 0.625, "f1_n": 50, "precision": 0.5, "precision_n": 50}}
    html = client.get(f"/latents/{SAE}/{latent}").text
    assert 'id="explanation-source"' in html and "automatic" in html and "<code>test</code>" in html
    scores = html.split('id="explanation-scores"', 1)[1].split("</table>", 1)[0]
    assert "<td>f1</td><td>0.625</td><td>50</td>" in scores


def test_hand_written_explanation_is_marked_and_survives_a_rerun(client, db):
    from app.explain.runner import run_explain

    latent = 5
    r = client.post(f"/latents/{SAE}/{latent}/explanation", data={"explanation": "my own words"}, headers=BEARER)
    assert r.status_code == 200 and "hand-written" in r.text
    run_explain(db, "builtin", latents=[latent])  # the explainer runs again over this latent
    d = client.get(f"/api/saes/{SAE}/latents/{latent}").json()
    assert d["explanation"] == "my own words"
    assert d["explanation_source"] == "human" and d["explanation_explainer"] == "human"
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM latent_explanations WHERE latent = ? AND explainer = 'builtin'",
                            (latent,)).fetchone() == (1,)  # the rerun wrote its own row beside the human one
    assert "hand-written" in client.get(f"/latents/{SAE}/{latent}").text
    search = client.get(f"/latents/{SAE}/search", params={"q": "my own words"}).text
    assert "hand-written" in search


def test_search_ranks_exact_text_first_then_by_score(client, db):
    # (latent, text, f1): the expected order by hand — exact matches by score (unscored last), then substring.
    cases = [(40, "zorblax quux", 0.99), (41, "zorblax", 0.1), (42, "zorblax", 0.9), (43, "zorblax", None)]
    for latent, text, f1 in cases:
        put(db, latent, text, scores=None if f1 is None else {"f1": f1})
    r = client.get(f"/latents/{SAE}/search", params={"q": "zorblax"})
    order = [int(m) for m in re.findall(rf'<li><a href="/latents/{SAE}/(\d+)"', r.text)]
    assert order[:4] == [42, 41, 43, 40]


def test_dense_filter_hides_exactly_the_latents_above_the_level(client, db, encoded):
    with closing(sqlite3.connect(db)) as conn:
        seen = int(conn.execute("SELECT value FROM meta WHERE key = 'tokens_seen'").fetchone()[0])
        density = {i: c / seen for i, c in conn.execute("SELECT latent, count FROM latents")}
    top = [t["latent"] for t in encoded["top_latents"]]
    values = sorted(density[i] for i in top)
    level = values[len(values) // 2]
    expected_hidden = sorted(i for i in top if density[i] > level)
    assert 0 < len(expected_hidden) < len(top)  # the level splits the list: the test can fail both ways
    html = client.get("/", params={"text": TEXT, "sae": SAE, "max_density": level}).text
    assert sorted(top_table_latents(html)) == sorted(i for i in top if density[i] <= level)
    listed = top + [x["latent"] for row in encoded["latents_per_token"] for x in row]
    note = html.split('id="dense-hidden"', 1)[1].split("</p>", 1)[0]
    assert sorted(map(int, re.findall(r"#(\d+)", note))) == sorted({i for i in listed if density[i] > level})
    assert set(expected_hidden) <= set(map(int, re.findall(r"#(\d+)", note)))
    per_token = html.split('id="top-latents"', 1)[0]
    shown_ids = {int(m) for m in re.findall(rf'href="/latents/{SAE}/(\d+)"', per_token)}
    assert not shown_ids & {i for i, d in density.items() if d > level}
    unfiltered = client.get("/", params={"text": TEXT, "sae": SAE}).text
    assert sorted(top_table_latents(unfiltered)) == sorted(top) and 'id="dense-hidden"' not in unfiltered


def test_bad_density_level_is_a_422_with_a_message(client):
    r = client.get("/", params={"text": TEXT, "sae": SAE, "max_density": "lots"})
    assert r.status_code == 422 and "max_density must be a number" in r.text


def test_explanations_are_escaped(client, db, labelled):
    i = labelled[-1]
    put(db, i, "<script>alert(1)</script>")
    for url, params in ((f"/latents/{SAE}/{i}", {}), ("/", {"text": TEXT, "sae": SAE}),
                        (f"/latents/{SAE}/search", {"q": str(i)})):
        html = client.get(url, params=params).text
        assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    put(db, i, f"lbl{i} words")
