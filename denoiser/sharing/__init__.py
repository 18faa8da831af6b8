"""Models handed between machines: train once, clean anywhere.

    bundle       one file with everything clean needs for a model (export, checked import)
    download     a bundle fetched by URL: progress, resume, retries, a clear timeout
    onnx_export  a cleaning model as ONNX, for runtimes without PyTorch
"""
