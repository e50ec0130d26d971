"""Text clean-up for abstracts and files: one whitespace style, LaTeX-ish markup reduced to its words."""
from __future__ import annotations

import re
import unicodedata

# Commands whose argument is the text itself (\emph{x} -> x).
_KEEP_ARG = re.compile(r"\\(?:emph|textbf|textit|texttt|textsc|textrm|mathrm|mathbf|mathit|mathcal|text|url|underline)\s*\{([^{}]*)\}")
# Commands whose argument is not prose (\cite{...} -> "").
_DROP_ARG = re.compile(r"\\(?:cite[pt]?|ref|eqref|label|footnote)\s*\{[^{}]*\}")
_GROUP_FONT = re.compile(r"\{\\(?:em|bf|it|tt|sc)\s+([^{}]*)\}")
_ESCAPED = {r"\%": "%", r"\&": "&", r"\_": "_", r"\#": "#", r"\$": "$", "``": '"', "''": '"', "~": " "}
# Symbols that abstracts write in LaTeX outside math mode too ("(\\pm5%)"); longest names first.
_SYMBOLS = {r"\times": "×", r"\approx": "≈", r"\sim": "~", r"\leq": "≤", r"\geq": "≥", r"\le": "≤",
            r"\ge": "≥", r"\pm": "±", r"\cdot": "·", r"\rightarrow": "→", r"\to": "→", r"\infty": "∞",
            r"\alpha": "α", r"\beta": "β", r"\gamma": "γ", r"\delta": "δ", r"\epsilon": "ε",
            r"\lambda": "λ", r"\mu": "μ", r"\sigma": "σ", r"\tau": "τ", r"\theta": "θ", r"\ldots": "...",
            r"\dots": "..."}
_SYMBOL = re.compile("|".join(re.escape(k) + r"(?![A-Za-z])" for k in _SYMBOLS))
# Accents as the arXiv dump writes author names: Bal\\'azs, {\\"o}, \\'{e}.
_ACCENT = re.compile(r"\{?\\(['`\"^~])\{?([A-Za-z])\}?\}?")
_COMBINING = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "^": "\u0302", "~": "\u0303"}
_MATH = re.compile(r"\$\$?([^$]+?)\$\$?")
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Collapse whitespace (arXiv keeps hard line breaks) and strip LaTeX markup, keeping its words."""
    if not text:
        return ""
    # Placeholders keep escaped dollars/percents out of the math and markup rules below.
    text = _ACCENT.sub(lambda m: unicodedata.normalize("NFC", m.group(2) + _COMBINING[m.group(1)]), text)
    text = text.replace(r"\$", "\x00").replace(r"\%", "\x01")
    for _ in range(3):  # nested markup: \emph{\textbf{x}}
        text = _KEEP_ARG.sub(r"\1", text)
        text = _GROUP_FONT.sub(r"\1", text)
    text = _DROP_ARG.sub("", text)
    text = _MATH.sub(r"\1", text)
    text = _SYMBOL.sub(lambda m: _SYMBOLS[m.group(0)], text)
    for src, dst in _ESCAPED.items():
        text = text.replace(src, dst)
    text = text.replace("\x00", "$").replace("\x01", "%")
    return _WS.sub(" ", text).strip()


def normalize_title(title: str) -> str:
    """Titles get the same clean-up; a trailing period is dropped so the same paper matches across sources."""
    return normalize_text(title).rstrip(".").strip()
