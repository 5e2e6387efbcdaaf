"""Training of the width-reduced demo model (`disco train`, `disco eval`)."""
