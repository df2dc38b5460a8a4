from . import microsoft_outlook_graph_setup
