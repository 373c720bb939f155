cwlVersion: v1.2
class: CommandLineTool
label: Sleep for a while (to cancel it)
baseCommand: sleep
inputs:
  seconds:
    type: int
    inputBinding: {position: 1}
outputs: []
