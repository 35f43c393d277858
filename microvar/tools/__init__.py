"""Tools around the pipeline, none of which the pipeline needs: ``lint`` (check seeds and
recipes before a run), ``preview`` (one seed's variants), ``probe`` (the response map of
edits) and ``report`` (an HTML page about a finished dataset)."""
