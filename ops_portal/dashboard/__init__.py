"""The console's home page figures: route and schema."""
