// The random-weights banner: when the server runs weights written by
// `ccsr weights random`, every result is noise-like by design, and a person
// must see that before wondering why. /readyz reports it (read from the
// checkpoint's metadata, not guessed); it answers 503 while the model loads,
// with the same field, so one request is enough.
const banner = document.getElementById("random-weights-banner");

async function check() {
  try {
    const res = await fetch("readyz", { cache: "no-store" });
    const body = await res.json();
    if (body.random_weights === true) {
      banner.hidden = false;
      document.body.dataset.randomWeights = "true";
    } else {
      document.body.dataset.randomWeights = String(body.random_weights);
    }
  } catch (err) {
    setTimeout(check, 3000); // the server is restarting: ask again
  }
}

if (banner) check();
