"""Files in and out: images (8/16-bit PNG, JPEG, …), input lists, atomic writers, comparison
plots and the job that restores one input file end to end."""
