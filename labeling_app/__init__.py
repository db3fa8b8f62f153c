"""The Gradio labelling app: humans rank responses in the browser (issue 3). Reads and writes only through db/."""
