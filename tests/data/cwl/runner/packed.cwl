{
  "cwlVersion": "v1.2",
  "$graph": [
    {"id": "#say", "class": "CommandLineTool", "baseCommand": "echo",
     "inputs": [{"id": "#say/word", "type": "string", "inputBinding": {"position": 1}}],
     "outputs": [{"id": "#say/out", "type": "stdout"}], "stdout": "said.txt"},
    {"id": "#main", "class": "Workflow",
     "inputs": [{"id": "#main/word", "type": "string"}],
     "outputs": [{"id": "#main/said", "type": "File", "outputSource": "#main/step/out"}],
     "steps": [{"id": "#main/step", "run": "#say", "in": [{"id": "#main/step/word", "source": "#main/word"}],
                "out": ["#main/step/out"]}]}
  ]
}
