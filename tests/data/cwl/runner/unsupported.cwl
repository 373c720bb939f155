cwlVersion: v1.2
class: CommandLineTool
doc: cwltool --no-container cannot honour a required DockerRequirement (exit 33).
requirements:
  DockerRequirement: {dockerPull: "debian:stable-slim"}
baseCommand: "true"
inputs: []
outputs: []
