"""Try a trained lilTinyNet model in the browser, or call it over HTTP.

    pip install -r requirements-app.txt
    python app.py                                   # the fine-tuned model, on http://127.0.0.1:7860
    python app.py --model cifar10_lilTinyNet.h5 --port 8000

The page: drop images (or paste one); each gets its likeliest classes with calibrated probabilities
("unsure" below the confidence chosen on validation) and Grad-CAM's heat map of where the model
looked, under the model's name, classes, test accuracy and training date. The endpoint, in the
same process: POST /api/classify with the image as a multipart field named "image", or as JSON
{"image": "<base64>"}; it answers {"model", "top": [{"class", "probability"}], "unsure"}:

    curl -F image=@photo.jpg http://127.0.0.1:7860/api/classify

Images are prepared by predict.py's own code, so both answer what predict.py answers; requests
that arrive together are classified as one batch, on LiteRT where it is installed. The server
listens on 127.0.0.1, this machine alone, unless --host says otherwise: with --host 0.0.0.0
anyone who can reach the port can use the model and see its classes, with no password.
"""

import base64
import binascii
import html
import json
import os
import time
from pathlib import Path

from tinynet import cli
from tinynet.errors import UserError
from tinynet.runtime import add_runtime_arg

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no call home: the page works offline


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    cli.add_model_arg(parser)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every network)")
    parser.add_argument("--port", type=cli.positive_int, default=7860, help="the port to listen on")
    parser.add_argument("--top", type=cli.positive_int, default=3, help="classes shown per image")
    add_runtime_arg(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import gradio  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("app.py needs Gradio: pip install -r requirements-app.txt") from None
    from tinynet.service import Classifier

    classifier = Classifier(args.model, args.runtime)
    size = classifier.image_size
    classifier.runner((size, size, 3))  # converted before the first request, not during it
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (the page) and "
          f"http://{args.host}:{args.port}/api/classify (the endpoint); Ctrl-C stops")
    uvicorn.run(make_app(classifier, args.top), host=args.host, port=args.port, log_level="warning")


def make_app(classifier, top: int):
    """The endpoint and the page, one FastAPI application."""
    import gradio as gr
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    from tinynet.service import MAX_UPLOAD_BYTES

    api = FastAPI(title="lilTinyNet")

    @api.post("/api/classify")
    async def classify(request: Request) -> JSONResponse:
        start = time.perf_counter()
        try:
            data = await image_bytes(request, MAX_UPLOAD_BYTES)
            image = await run_in_threadpool(classifier.prepare, data)
            [answer] = await run_in_threadpool(classifier.classify, [image], top)
        except UserError as error:
            status = 413 if "limit" in str(error) else 400
            return JSONResponse({"error": str(error)}, status_code=status)
        return JSONResponse({"model": Path(classifier.path).name, **answer,
                             "milliseconds": round(1000 * (time.perf_counter() - start), 2)})

    with gr.Blocks(title="lilTinyNet") as page:
        gr.Markdown(header(classifier.facts()))
        with gr.Row():
            files = gr.File(file_count="multiple", file_types=["image"], label="Drop images here")
            pasted = gr.Image(sources=["upload", "clipboard"], type="filepath", label="or paste one")
        button = gr.Button("Classify", variant="primary")
        results = gr.HTML()
        gallery = gr.Gallery(label="Where the model looked (Grad-CAM)", columns=2, height="auto", object_fit="contain")
        button.click(lambda given, one: on_page(classifier, top, given, one), [files, pasted], [results, gallery])
    theme = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts to fetch
    return gr.mount_gradio_app(api, page, path="/", theme=theme, max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False)


async def image_bytes(request, limit: int) -> bytes:
    """The image a request carries: the multipart field "image", or JSON's base64 "image"; at most
    `limit` bytes are read, whatever the request says of its length."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit * 4 // 3 + 2**16:  # base64 and multipart add a third and some headers
            raise UserError(f"the request is larger than the {limit // 2**20} MiB limit")
    request._body = body  # read once: form() parses what was read
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        if "image" not in form or not hasattr(form["image"], "read"):
            raise UserError(f"expected a file in a field named 'image'; got fields {sorted(form.keys())}")
        return await form["image"].read()
    if kind.startswith("application/json"):
        try:
            return base64.b64decode(json.loads(body)["image"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise UserError('expected JSON {"image": "<the image file in base64>"}') from None
    raise UserError("send the image as multipart/form-data (field 'image') or as JSON {\"image\": base64}")


def on_page(classifier, top: int, files: list | None, pasted: str | None) -> tuple[str, list]:
    """The page's answer: a table of every image's classes, and each image beside its heat map."""
    paths = [str(getattr(f, "name", f)) for f in files or []] + ([pasted] if pasted else [])
    rows, pictures = [], []
    for path in paths:
        name = Path(path).name
        try:
            image = classifier.prepare(Path(path).read_bytes())
        except (UserError, OSError) as error:
            rows.append(f"<tr><td>{html.escape(name)}</td><td colspan='2'>{html.escape(str(error))}</td></tr>")
            continue
        [answer] = classifier.classify([image], top)
        best = answer["top"][0]
        label = f"unsure (best guess {best['class']})" if answer["unsure"] else best["class"]
        rows.append(f"<tr data-image='{html.escape(name)}' data-class='{html.escape(best['class'])}' "
                    f"data-probability='{best['probability']:.8f}' data-unsure='{int(answer['unsure'])}'>"
                    f"<td>{html.escape(name)}</td><td><b>{html.escape(label)}</b></td><td>"
                    + ", ".join(f"{html.escape(t['class'])} {t['probability']:.1%}" for t in answer["top"])
                    + "</td></tr>")
        pictures.append((classifier.explain(image, f"{best['class']} {best['probability']:.0%}"), name))
    table = ("<table class='answers'><tr><th>image</th><th>answer</th><th>likeliest classes</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p>No image given.</p>"
    return table, pictures


def header(facts: dict) -> str:
    accuracy = (f"test accuracy **{facts['test_accuracy']:.1%}** on {facts['test_images']} images"
                if facts.get("test_accuracy") is not None else "no test accuracy recorded")
    return (f"# lilTinyNet: {facts['model']}\n{accuracy}, trained {facts['trained']}. "
            f"Classes: {', '.join(facts['classes'])}.")
