"""The model's habits undone before its citations are read: copied gap marks and markers before their sentence."""

from rag.check import check_answer
from rag.model_text import tidy
from tests.test_cite import source


def test_markers_written_before_their_sentences_move_after_them():
    """The 1.5B's "[1] The key steps … are:" (zh-047) and "… an image. [2] Multi-query …" (zh-006)."""
    assert tidy("[1] The key steps of PEFT are:\n1. Data sampling: a small portion is sampled.") == \
        "The key steps of PEFT are:[1]\n1. Data sampling: a small portion is sampled."
    assert tidy("[1] Keys come from the same group, such as the patches in an image. [2] MQA and GQA are variants.") == \
        "Keys come from the same group, such as the patches in an image.[1] MQA and GQA are variants.[2]"
    # markers after their sentences, the usual way, stay where they are
    assert tidy("句子一。[1] 句子二。[2]") == "句子一。[1] 句子二。[2]"
    assert tidy("第一句[source 2]。第二句[1][P1]。") == "第一句[2]。第二句[1]。"


def test_a_copied_gap_mark_is_no_text_and_its_list_number_no_fact():
    """fu-012: the model copied two evidence pieces with the " … " between them; "… 4. 可扩展性…" was judged
    unsupported for a "4" the source does not hold, although the sentence is the source's word for word."""
    evidence = ("1. 量化参数:首先,对大规模语言模型的参数进行量化。 … 4. 可扩展性和通用性:QLoRA的量化和低秩适应方法"
                "可以应用于各种大型语言模型,包括预训练的Transformer模型等。")
    draft = ("量化参数:首先,对大规模语言模型的参数进行量化。 … 4. 可扩展性和通用性:QLoRA的量化和低秩适应方法可以应用于"
             "各种大型语言模型,包括预训练的Transformer模型等。[1]")
    assert tidy(draft).splitlines()[1].startswith("4. 可扩展性")
    checked = check_answer(draft, [source(1, evidence)], None, "QLoRA有哪些特点?")
    assert checked.unsupported == [] and "…" not in checked.text and "\n4. 可扩展性" in checked.text
    assert tidy("如A、B… 等等。[1]") == "如A、B… 等等。[1]"  # an ellipsis of the model's own stays
