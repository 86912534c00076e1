"""The demo: OmniCLIP against CLIP frame averaging on embedded motion videos with the embedded tiny CLIP.

``omniclip demo`` (``omniclip.commands.demo``) runs ``omniclip.demo.run.run_demo``; docs/demo.md shows its output and
the equivalent ``omniclip train`` / ``eval`` / ``predict`` commands for real CLIP weights and a real dataset.
"""
