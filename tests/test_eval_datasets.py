"""The relevance rule, the SQuAD importer and the BEIR loader behind `python -m rag.eval`."""

import json

from rag.eval.datasets import import_squad, load_beir
from rag.eval.qa import QAItem, RelevanceJudge, answer_phrase_recall, char_f1
from rag.eval.retrieval import ndcg, question_metrics
from rag.records import Chunk

DOC = "第一段讲注意力。KV Cache 缓存 key 和 value，\n避免重复计算。第三段讲位置编码。"


def _chunk(start: int, end: int, doc_id: str = "d") -> Chunk:
    return Chunk(f"c{start}", doc_id, DOC[start:end], "src", (), start, end)


def test_evidence_rule_contains_straddles_and_doc_ids():
    judge = RelevanceJudge({"d": DOC})
    item = QAItem("q", "?", evidence=["KV Cache 缓存 key 和 value， 避免重复计算"])
    at = DOC.index("KV")
    end = DOC.index("算。") + 1
    assert judge.relevant(item, _chunk(0, len(DOC)))  # contains it (whitespace ignored)
    mid = at + (end - at) * 2 // 3
    assert judge.relevant(item, _chunk(at, mid))  # covers more than half of the occurrence
    assert not judge.relevant(item, _chunk(mid, len(DOC)))  # covers less than half
    assert judge.relevant(QAItem("q", "?", doc_ids=["d"]), _chunk(0, 3))


def test_a_restatement_counts_for_citations_only():
    """The notes say a fact twice; the item names the second place as `restated`: a citation of it holds the
    fact (restated=True), retrieval still looks for the labelled evidence alone."""
    judge = RelevanceJudge({"d": DOC})
    item = QAItem("q", "?", evidence=["KV Cache 缓存 key 和 value"], restated=["第三段讲位置编码"])
    later = _chunk(DOC.index("第三段"), len(DOC))
    assert not judge.relevant(item, later)
    assert judge.relevant(item, later, restated=True)
    assert not judge.relevant(item, _chunk(0, DOC.index("KV")), restated=True)


def test_answer_metrics_fold_case_width_and_space():
    assert answer_phrase_recall("使用 ＫＶ cache 加速", ["kv cache", "显存"]) == 0.5
    assert char_f1("四分钟", "4分钟") == char_f1("4 分钟", "4分钟") * 2 / 3 or char_f1("4 分钟", "4分钟") == 1.0
    assert char_f1("", "x") == 0.0


def test_a_key_phrase_may_have_english_wordings():
    """A question asked in English is answered in English: any wording of a key phrase counts, and an
    English wording matches from a word start ("supervised" is not in "unsupervised")."""
    phrases = [["有监督学习", "supervised"], ["归一化", "normaliz"]]
    assert answer_phrase_recall("Fine-tuning is a supervised process; softmax normalizes the scores.", phrases) == 1.0
    assert answer_phrase_recall("Fine-tuning is unsupervised; it renormalizes nothing.", phrases) == 0.0
    assert answer_phrase_recall("微调是 有监督 学习", phrases) == 0.5
    assert answer_phrase_recall("scores sum  to 1", [["和为1", "sum to 1"]]) == 1.0


def test_ranking_metrics():
    row = question_metrics([0, 1, 0, 1], [1, 1], 2)
    assert (row["hit@1"], row["hit@3"], row["mrr@10"], row["first_relevant"]) == (0.0, 1.0, 0.5, 2)
    assert ndcg([1, 0], [1]) == 1.0 and 0 < ndcg([0, 1], [1]) < 1


def test_squad_import(tmp_path):
    squad = {"data": [{"id": "A", "title": "标题", "paragraphs": [{"id": "P1", "context": "甲是乙。丙在1994年成立。丁很好。",
              "qas": [{"id": "Q1", "question": "丙何时成立？", "answers": [{"text": "1994年", "answer_start": 7}]}]}]}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    corpus, qa, n = import_squad(path, tmp_path / "out")
    assert n == 1
    doc = json.loads(corpus.read_text(encoding="utf-8"))
    item = json.loads(qa.read_text(encoding="utf-8"))
    assert (doc["_id"], doc["title"]) == ("P1", "标题")
    assert item["evidence"] == ["丙在1994年成立。"] and item["doc_ids"] == ["P1"] and item["answers"] == ["1994年"]


def test_beir_loader(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "claim one"}\n{"_id": "2", "text": "two"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td9\t1\n1\td3\t2\n")
    items, qrels = load_beir(tmp_path, "test")
    assert [(i.id, i.question, i.doc_ids) for i in items] == [("1", "claim one", ["d3", "d9"])]
    assert qrels == {"1": {"d9": 1, "d3": 2}}
