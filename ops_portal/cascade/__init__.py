"""Upper platforms (cascade upward, issue 15): routes and schemas; the logic is the top-level ``cascade`` package."""
