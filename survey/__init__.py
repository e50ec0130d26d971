"""Survey domain: outline, sources, citations, rendering (Markdown + BibTeX), trace. Never imports agents/.

Import the submodules directly (`from survey.citations import check_citations`); this file stays empty so
that importing the package costs nothing.
"""
