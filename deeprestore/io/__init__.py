"""Files in and out: images (8/16-bit PNG, JPEG, …), input lists, atomic writers, the run's
manifest, comparison plots."""
