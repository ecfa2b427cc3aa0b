"""Reports: study results -> pandas tables -> seaborn figures."""
