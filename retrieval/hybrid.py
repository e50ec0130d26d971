"""BM25 over the stored chunks (bm25s), built in memory the first time a hybrid search asks for it."""
from __future__ import annotations


class BM25:
    """Lexical ranking of chunk rows; catches exact terms (model names, acronyms) that embeddings blur."""

    def __init__(self, chunks: list[tuple[int, str, str]]):
        import bm25s

        self._bm25s = bm25s
        self.rows = [row for row, _, _ in chunks]
        corpus = [f"{title}\n{text}" for _, title, text in chunks]
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    def top(self, query: str, n: int) -> list[tuple[int, float]]:
        """Up to `n` (row, bm25 score) pairs, best first; rows without any query term are left out."""
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:
            return []  # only stop-words: BM25 has nothing to say
        n = min(n, len(self.rows))
        docs, scores = self.retriever.retrieve(tokens, k=n, show_progress=False)
        return [(self.rows[int(i)], float(s)) for i, s in zip(docs[0], scores[0]) if s > 0]
